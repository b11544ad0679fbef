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
	// accepted: the claim succeeded, so the connection's end releases the
	// id. Set before the connection starts.
	accepted bool
}

// Ended is the end of the binary's connection (peer.Ender).
func (b *localBinary) Ended(info peer.CloseInfo) {
	if b.accepted {
		b.s.binaryEnded(b, remoteIP(b.conn), info)
	} else {
		b.s.stats.closed(RoleBinary, info.Code)
	}
	b.s.forget(b.conn)
}

var _ Binary = (*localBinary)(nil)

func (b *localBinary) Deliver(buf *bufpool.Buf, msg []byte, cancel <-chan struct{}, last bool) error {
	return b.conn.SendWait(buf, msg, cancel, last)
}

// TryDeliver is Deliver without the wait (see tryDeliverer).
func (b *localBinary) TryDeliver(buf *bufpool.Buf, msg []byte, last bool) error {
	return b.conn.TrySend(buf, msg, last)
}

func (b *localBinary) Probe(timeout time.Duration) bool { return b.conn.Probe(timeout) }

func (b *localBinary) Closing() bool { return !b.conn.Open() }

func (b *localBinary) Evict(cl peer.Close) { b.conn.Close(cl, false) }

// serveBinary is /v1/server: the pyry daemon claiming its server-id. The
// claim is made before the 101 response goes out, so the binary is
// registered the moment its upgrade completes: a phone that dials right
// after cannot find the id missing. A claim that finds the incumbent's
// connection already closing (a daemon that redials right after its clean
// close) is a reclaim at once. Any other conflicting claim is answered
// with 101 as well and resolved afterwards (probe, then 4409 or takeover).
func (s *Server) serveBinary(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(wire.HeaderServer)
	switch {
	case id == "" || r.Header.Get(wire.HeaderVersion) == "" || r.Header.Get("User-Agent") == "":
		s.refuse(w, EndpointServer, OutcomeBadHeaders)
		return
	case !wire.ValidServerID(id):
		s.refuse(w, EndpointServer, OutcomeBadID)
		return
	case s.isDraining():
		s.stats.Upgrade(EndpointServer, OutcomeDraining)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if !peer.CheckUpgrade(r) {
		s.stats.Upgrade(EndpointServer, OutcomeNotWebSocket)
	}
	nc, pending, accept, err := peer.Hijack(w, r)
	if err != nil {
		s.log.Debug("upgrade_failed", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		return
	}
	c := peer.New(nc, pending, &s.binOpt)
	c.PlaceBy(id)  // its phones will be placed on the same loop
	c.HoldWrites() // phones may queue frames once the claim is made; the 101 goes first
	if !s.track(c) {
		s.stats.Upgrade(EndpointServer, OutcomeDraining)
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = nc.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		nc.Close()
		c.Unplace()
		return
	}
	b := &localBinary{s: s, id: id, conn: c}
	res := s.claim(b)
	if res.Outcome == registry.Reclaimed {
		s.reclaimed(res.Evicted)
	}
	if err := peer.Accept(nc, accept, s.cfg.WriteTimeout); err != nil {
		// The socket is gone; Run notices at once and the claim ends as
		// for any binary that drops.
		c.Abort(peer.Close(wire.CloseGoingAway))
	}
	c.ReleaseWrites()
	go s.runBinary(b, res)
}

// runBinary owns a binary connection from its claim to its release.
func (s *Server) runBinary(b *localBinary, res registry.ClaimResult[Binary, Phone]) {
	// No per-connection logger (slog's With would keep a preformatted copy
	// of these attributes for the connection's whole life).
	remote := remoteIP(b.conn)
	if res.Outcome == registry.Conflict {
		res.Outcome = s.resolveConflict(b, res.Incumbent)
	}
	if res.Outcome == registry.Conflict || res.Outcome == registry.Unavailable {
		// 4409 only for an incumbent that answered the probe; a claim that
		// could not be checked is told to come back (the real daemon stops
		// for good on a 4409).
		o, cl := OutcomeConflict, wire.CloseClaimed
		if res.Outcome == registry.Unavailable {
			o, cl = OutcomeUnavailable, wire.CloseTryAgain
		}
		s.stats.Upgrade(EndpointServer, o)
		s.log.Info("binary_refused", "server_id", b.id, "remote", remote, "code", cl.Code)
		b.conn.Close(peer.Close(cl), false)
		s.serve(b.conn, b)
		return
	}
	s.stats.Upgrade(EndpointServer, OutcomeAccepted)
	s.binaries.Add(1)
	s.log.Info("binary_connected", "server_id", b.id, "remote", remote)
	b.accepted = true
	s.serve(b.conn, b)
}

// binaryEnded releases the id of a binary whose connection has ended.
func (s *Server) binaryEnded(b *localBinary, remote string, info peer.CloseInfo) {
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

// claim asks the directory for b's id. An incumbent whose connection has
// begun to close is gone: the claim replaces it at once and is a reclaim,
// with no probe (so never a 4409). Otherwise the result is the directory's.
func (s *Server) claim(b *localBinary) registry.ClaimResult[Binary, Phone] {
	res := s.dir.Claim(b.id, b)
	for range 3 { // retried only when the id changes hands meanwhile
		if res.Outcome != registry.Conflict || !res.Incumbent.Closing() {
			return res
		}
		if evicted, ok := s.dir.TakeOver(b.id, res.Incumbent, b); ok {
			return registry.ClaimResult[Binary, Phone]{Outcome: registry.Reclaimed, Evicted: evicted}
		}
		res = s.dir.Claim(b.id, b)
	}
	return res
}

// reclaimed counts a reclaim and closes the phones of the binary that
// held the id before: a restarted daemon has no session for them.
func (s *Server) reclaimed(phones []Phone) {
	s.stats.GraceReclaimed.Add(1)
	evict(phones, peer.Close(wire.CloseReclaimed))
}

// resolveConflict runs the conflict probe against a live incumbent and
// takes the id over if it stays silent. An incumbent that begins to close
// during the probe is gone instead: b reclaims the id. It returns Claimed
// when b now holds the id, Conflict when the incumbent answered (4409), and
// Unavailable when the claim could not be settled (the id kept changing
// hands, or a cluster directory could not check it).
func (s *Server) resolveConflict(b *localBinary, incumbent Binary) registry.Outcome {
	for range 3 { // retried only when the id changes hands during a probe
		if incumbent.Probe(s.cfg.ProbeTimeout) {
			return registry.Conflict
		}
		gone := incumbent.Closing()
		evicted, ok := s.dir.TakeOver(b.id, incumbent, b)
		if ok && gone {
			s.reclaimed(evicted)
			return registry.Claimed
		}
		if ok {
			s.stats.Takeovers.Add(1)
			s.log.Info("binary_takeover", "server_id", b.id)
			// Phones first: a phone waiting on the silent incumbent's full
			// queue must learn of the reclaim, not of a vanished binary.
			evict(evicted, peer.Close(wire.CloseReclaimed))
			incumbent.Evict(peer.Close(wire.CloseHeartbeat))
			return registry.Claimed
		}
		res := s.claim(b)
		switch res.Outcome {
		case registry.Unavailable, registry.Claimed:
			return res.Outcome
		case registry.Reclaimed:
			s.reclaimed(res.Evicted)
			return registry.Claimed
		}
		incumbent = res.Incumbent
	}
	return registry.Unavailable
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
	last := !c.Buffered()
	lp, local := p.(*localPhone)
	near := local && c.SameLoop(lp.conn)
	if near {
		last = false // the loop writes it when this batch is done
	}
	p.Deliver(buf, env.Frame, last)
	if near {
		// ... unless this read brings it more than a quarter of its
		// budget: a binary's read can be 1 MiB, and small frames are
		// charged their whole pooled buffer (a 40-byte frame some 600
		// bytes), so waiting for the batch's end could fill the queue of
		// a phone that reads everything it is sent.
		lp.conn.FlushOver(s.phoneOpt.QueueBytes / 4)
	}
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
