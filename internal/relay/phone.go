package relay

import (
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
	"github.com/pyrycode/pyrycode-relay/internal/evloop"
	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/registry"
	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

// localPhone is a phone connected to this relay.
type localPhone struct {
	s      *Server
	id     string
	connID string
	conn   *peer.Conn
	// binary is the binary this phone was paired with when it registered
	// (nil when it joined during a grace period). Every change of binary
	// evicts all phones, so it never changes. Reader goroutine only.
	binary Binary
	// silent means the binary must not get a close notice: it asked for the
	// close, or the phone was evicted because the id changed hands.
	silent atomic.Bool
	// near: served on the binary's event loop (peer.Conn.SameLoop), so a
	// frame to it is left for the loop's end-of-batch write. Set before
	// the connection starts; read by its handler only.
	near bool
	// accepted: registered, so the connection's end unregisters it. Set
	// before the connection starts.
	accepted bool
}

// Ended is the end of the phone's connection (peer.Ender).
func (p *localPhone) Ended(info peer.CloseInfo) {
	if p.accepted {
		p.s.phoneEnded(p, info)
	} else {
		p.s.stats.closed(RolePhone, info.Code)
	}
	p.s.forget(p.conn)
}

var _ Phone = (*localPhone)(nil)

// Defer runs t on the phone's event loop after the sockets ready now (see
// peer.Conn.Defer); false when the phone is not on a loop. A cluster
// directory's TryDeliver uses it, from the phone's handler, to send the
// frames of one loop pass to another node together.
func (p *localPhone) Defer(t evloop.Task) bool { return p.conn.Defer(t) }

func (p *localPhone) Deliver(buf *bufpool.Buf, frame []byte, last bool) {
	switch err := p.conn.Send(buf, frame, last); {
	case err == nil:
		if max := p.s.cfg.MaxQueuedBytes; max > 0 && p.s.stats.QueuedBytes.Load() > max {
			p.s.shedLargestBacklog()
		}
	case errors.Is(err, peer.ErrQueueFull):
		buf.Release()
		if p.conn.Close(peer.Close(wire.CloseBacklog), false) {
			p.s.stats.BacklogCloses.Add(1)
			p.s.log.Info("phone_backlog_full", "server_id", p.id, "conn_id", p.connID)
		}
	default:
		buf.Release()
	}
}

func (p *localPhone) CloseDirective(buf *bufpool.Buf, frame []byte, code int) {
	p.silent.Store(true)
	if frame != nil {
		p.Deliver(buf, frame, false) // the close frame follows
	}
	p.conn.Close(peer.Close{Code: code}, true)
}

func (p *localPhone) Evict(cl peer.Close) {
	p.silent.Store(true)
	p.conn.Close(cl, false)
}

// servePhone is /v1/client: a phone asking for a server-id.
func (s *Server) servePhone(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(wire.HeaderServer)
	switch {
	case id == "" || r.Header.Get(wire.HeaderToken) == "" || r.Header.Get("User-Agent") == "":
		s.refuse(w, EndpointClient, OutcomeBadHeaders)
		return
	case !wire.ValidServerID(id):
		s.refuse(w, EndpointClient, OutcomeBadID)
		return
	}
	c := s.upgrade(w, r, EndpointClient, &s.phoneOpt, id)
	if c == nil {
		return
	}
	p := &localPhone{s: s, id: id, connID: s.ids.next(), conn: c}
	go s.runPhone(p)
}

// runPhone owns a phone connection from registration to its close notice.
func (s *Server) runPhone(p *localPhone) {
	holder, err := s.dir.AddPhone(p.id, p.connID, p, s.cfg.MaxPhones)
	if err != nil {
		cl, o := wire.CloseNoServer, OutcomeNoServer
		switch {
		case errors.Is(err, registry.ErrTooManyPhones):
			cl, o = wire.CloseTooManyPhones, OutcomeTooManyPhones
		case errors.Is(err, registry.ErrUnavailable):
			cl, o = wire.CloseTryAgain, OutcomeUnavailable
		}
		s.stats.Upgrade(EndpointClient, o)
		s.log.Debug("phone_refused", "server_id", p.id, "code", cl.Code)
		p.conn.Close(peer.Close(cl), false)
		s.serve(p.conn, p)
		return
	}
	s.stats.Upgrade(EndpointClient, OutcomeAccepted)
	p.binary = holder
	if lb, ok := holder.(*localBinary); ok {
		p.near = p.conn.SameLoop(lb.conn) // both placed by the id (upgrade)
	}
	s.phones.Add(1)
	s.log.Debug("phone_connected", "server_id", p.id, "conn_id", p.connID, "remote", remoteIP(p.conn))
	p.accepted = true
	s.serve(p.conn, p)
}

// phoneEnded unregisters a phone whose connection has ended and tells its
// binary, unless it must not be told.
func (s *Server) phoneEnded(p *localPhone, info peer.CloseInfo) {
	now, removed := s.dir.RemovePhone(p.id, p.connID, p)
	s.phones.Add(-1)
	s.stats.closed(RolePhone, info.Code)
	notify := removed && !p.silent.Load() && p.binary != nil && now == p.binary
	s.log.Debug("phone_disconnected", "server_id", p.id, "conn_id", p.connID, "code", info.Code, "notice", notify)
	if g, ok := p.binary.(RemoteBinary); ok {
		var notice []byte
		if notify {
			notice = wire.AppendCloseNotice(nil, p.connID, info.Code)
		}
		g.PhoneGone(notice)
		return
	}
	if !notify {
		return
	}
	buf := bufpool.Get(len(p.connID) + 40)
	msg := wire.AppendCloseNotice(buf.B[:0], p.connID, info.Code)
	if p.binary.Deliver(buf, msg, nil, true) != nil {
		buf.Release()
	}
}

// HandleMessage forwards one phone frame to the binary, back-pressured.
func (p *localPhone) HandleMessage(c *peer.Conn, op peer.Opcode, buf *bufpool.Buf, payload []byte) {
	if op != peer.OpText {
		buf.Release()
		c.Close(peer.Close(wire.CloseBinaryOpcode), false)
		return
	}
	if !wire.ValidJSON(payload) {
		buf.Release()
		c.Close(peer.Close(wire.CloseInvalidJSON), false)
		return
	}
	if p.binary == nil {
		// The id is in its grace period: no session to go to.
		buf.Release()
		c.Close(peer.Close(wire.CloseNoServer), false)
		return
	}
	head := p.s.phoneOpt.Headroom
	wire.PutSplicePrefix(buf.B[frameRoom:], p.connID)
	end := head + len(payload)
	buf.B[end] = '}'
	msg, last := buf.B[frameRoom:end+1], !c.Buffered() && !p.near
	if !c.OnLoop() {
		p.delivered(c, buf, len(payload), p.binary.Deliver(buf, msg, c.Closing(), last))
		return
	}
	// On an event loop the handler must not wait. A binary that can say
	// so without waiting takes the frame here; when its queue is over
	// budget (or it cannot tell), the phone is parked: its input waits,
	// as the reader goroutine would, while a goroutine waits for room.
	if tb, ok := p.binary.(tryDeliverer); ok {
		if err := tb.TryDeliver(buf, msg, last); !errors.Is(err, peer.ErrQueueFull) {
			p.delivered(c, buf, len(payload), err)
			return
		}
	}
	resume := c.Park()
	go func() {
		p.delivered(c, buf, len(payload), p.binary.Deliver(buf, msg, c.Closing(), last))
		resume()
	}()
}

// tryDeliverer is implemented by a Binary whose Deliver can be tried
// without waiting (localBinary): TryDeliver fails with peer.ErrQueueFull,
// keeping nothing, where Deliver would wait. Other Binary implementations
// are called from a goroutine when the phone is on an event loop.
type tryDeliverer interface {
	TryDeliver(buf *bufpool.Buf, msg []byte, last bool) error
}

// delivered accounts for a phone frame handed to the binary (err nil) or
// refused (then buf is released here).
func (p *localPhone) delivered(c *peer.Conn, buf *bufpool.Buf, n int, err error) {
	if err == nil {
		p.s.stats.FramesToBinary.Add(1)
		p.s.stats.BytesToBinary.Add(int64(n))
		return
	}
	buf.Release()
	if errors.Is(err, peer.ErrClosed) {
		// The binary left while this frame waited: same as the grace case.
		c.Close(peer.Close(wire.CloseNoServer), false)
	}
}
