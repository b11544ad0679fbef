package relay

import (
	"net/http"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/registry"
	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

// localBinary is a binary connected to this relay.
type localBinary struct {
	s    *Server
	id   string
	conn *peer.Conn
}

var _ Binary = (*localBinary)(nil)

func (b *localBinary) Deliver(buf *bufpool.Buf, msg []byte, cancel <-chan struct{}, last bool) error {
	return b.conn.SendWait(buf, msg, cancel, last)
}

func (b *localBinary) Probe(timeout time.Duration) bool { return b.conn.Probe(timeout) }

func (b *localBinary) Evict(cl peer.Close) { b.conn.Close(cl, false) }

// serveBinary is /v1/server: the pyry daemon claiming its server-id.
func (s *Server) serveBinary(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(wire.HeaderServer)
	switch {
	case id == "" || r.Header.Get(wire.HeaderVersion) == "" || r.Header.Get("User-Agent") == "":
		s.refuse(w, EndpointServer, OutcomeBadHeaders)
		return
	case !wire.ValidServerID(id):
		s.refuse(w, EndpointServer, OutcomeBadID)
		return
	}
	c := s.upgrade(w, r, EndpointServer, &s.binOpt)
	if c == nil {
		return
	}
	b := &localBinary{s: s, id: id, conn: c}
	go s.runBinary(b)
}

// runBinary owns a binary connection from its claim to its release.
func (s *Server) runBinary(b *localBinary) {
	defer s.forget(b.conn)
	// No per-connection logger (slog's With would keep a preformatted copy
	// of these attributes for the connection's whole life).
	remote := remoteIP(b.conn)
	if !s.claim(b) {
		s.stats.Upgrade(EndpointServer, OutcomeConflict)
		s.log.Info("binary_refused", "server_id", b.id, "remote", remote, "code", wire.CloseClaimed.Code)
		b.conn.Close(peer.Close(wire.CloseClaimed), false)
		s.stats.closed(RoleBinary, b.conn.Run(b).Code)
		return
	}
	s.stats.Upgrade(EndpointServer, OutcomeAccepted)
	s.binaries.Add(1)
	s.log.Info("binary_connected", "server_id", b.id, "remote", remote)
	info := b.conn.Run(b)
	s.binaries.Add(-1)
	s.stats.closed(RoleBinary, info.Code)
	grace := s.cfg.Grace
	if s.isDraining() {
		grace = 0
	}
	if s.dir.Release(b.id, b, grace, s.expireGrace(b.id)) {
		s.log.Info("binary_disconnected", "server_id", b.id, "remote", remote, "code", info.Code, "grace", grace.String())
	} else {
		s.log.Info("binary_displaced", "server_id", b.id, "remote", remote, "code", info.Code)
	}
}

// claim registers b as the holder of its id, running the conflict probe
// against a live incumbent. It reports whether b now holds the id.
func (s *Server) claim(b *localBinary) bool {
	for range 3 { // retried only when the id changes hands during a probe
		res := s.dir.Claim(b.id, b)
		switch res.Outcome {
		case registry.Claimed:
			return true
		case registry.Reclaimed:
			s.stats.GraceReclaimed.Add(1)
			evict(res.Evicted, peer.Close(wire.CloseReclaimed))
			return true
		}
		if res.Incumbent.Probe(s.cfg.ProbeTimeout) {
			return false
		}
		evicted, ok := s.dir.TakeOver(b.id, res.Incumbent, b)
		if !ok {
			continue
		}
		s.stats.Takeovers.Add(1)
		s.log.Info("binary_takeover", "server_id", b.id)
		// Phones first: a phone waiting on the silent incumbent's full
		// queue must learn of the reclaim, not of a vanished binary.
		evict(evicted, peer.Close(wire.CloseReclaimed))
		res.Incumbent.Evict(peer.Close(wire.CloseHeartbeat))
		return true
	}
	return false
}

// expireGrace returns the callback for an id whose grace period ran out.
func (s *Server) expireGrace(id string) func([]Phone) {
	return func(phones []Phone) {
		if s.isDraining() {
			// Shutdown releases ids at once; their phones are closing (or
			// about to be) for the same reason.
			evict(phones, peer.Close(wire.CloseShuttingDown))
			return
		}
		s.stats.GraceExpired.Add(1)
		s.log.Info("grace_expired", "server_id", id, "phones", len(phones))
		evict(phones, peer.Close(wire.CloseNormal))
	}
}

func evict(phones []Phone, cl peer.Close) {
	for _, p := range phones {
		p.Evict(cl)
	}
}

// HandleMessage routes one envelope from the binary. Anything malformed is
// dropped and counted; the binary connection always stays open.
func (b *localBinary) HandleMessage(c *peer.Conn, op peer.Opcode, buf *bufpool.Buf, payload []byte) {
	s := b.s
	if op != peer.OpText {
		s.stats.DroppedBinaryOp.Add(1)
		buf.Release()
		return
	}
	env, err := wire.ParseEnvelope(payload)
	if err != nil {
		s.stats.DroppedMalformed.Add(1)
		buf.Release()
		return
	}
	if len(env.ConnID) == 0 {
		s.pushWake(b.id, env.PushWake)
		buf.Release()
		return
	}
	p, ok := s.dir.Route(b.id, b, env.ConnID)
	if !ok {
		s.stats.DroppedUnknownConn.Add(1)
		buf.Release()
		return
	}
	if env.Frame != nil {
		s.stats.FramesToPhone.Add(1)
		s.stats.BytesToPhone.Add(int64(len(env.Frame)))
	}
	if env.HasClose {
		if env.CloseCodeReplaced {
			s.stats.CloseCodeReplaced.Add(1)
		}
		if env.Frame == nil {
			buf.Release()
			buf = nil
		}
		p.CloseDirective(buf, env.Frame, env.CloseCode)
		return
	}
	p.Deliver(buf, env.Frame, !c.Buffered())
}

// pushWake validates a push_wake request and hands it to the PushSink.
func (s *Server) pushWake(serverID string, raw []byte) {
	platform, token, err := wire.ParsePushWake(raw)
	if err != nil || token == "" || (platform != "fcm" && platform != "apns") {
		s.stats.PushMalformed.Add(1)
		return
	}
	s.stats.PushRequested.Add(1)
	s.push.Wake(serverID, platform, token)
}
