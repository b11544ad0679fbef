package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// echoLoop is the cheapest possible binary: every envelope it receives is
// already a valid envelope addressed to the sending phone, so it is written
// back unchanged. Replies are batched while more input is buffered.
func (r *runner) echoLoop(b *binaryConn) {
	c := b.c
	c.AutoFlush = true
	for {
		op, msg, err := c.ReadMessage()
		if err != nil {
			r.connEnded("binary", err)
			return
		}
		switch code, notice := isNotice(msg); {
		case op != opText:
			r.addErr("binary non-text message", nil)
		case len(msg) < 256 && notice:
			r.addNotice(code)
		default:
			c.AppendText(msg)
		}
		if len(c.Out) >= 256<<10 { // else ReadMessage flushes before it blocks
			if err := c.Flush(); err != nil {
				r.connEnded("binary", err)
				return
			}
		}
	}
}

// phoneLoop reads phone p until its connection ends. Each data frame is
// checked (sequence, size) and timed. An active phone (rt) answers each
// frame with the next of its stream; with ackEvery > 0 (fan-out) every
// ackEvery-th distinct frame is acknowledged to the binary.
func (r *runner) phoneLoop(p *phone, ackEvery int) {
	c := p.c
	c.AutoFlush = true
	p.ackEvery = ackEvery
	for {
		op, msg, err := c.ReadMessage()
		if err != nil {
			p.gone.Store(true) // nothing more will arrive: drain stops waiting for it
			r.connEnded("phone", err)
			return
		}
		r.phoneFrame(p, op, msg)
		if len(c.Out) >= 256<<10 { // else ReadMessage flushes before it blocks
			if err := c.Flush(); err != nil {
				r.connEnded("phone", err)
				return
			}
		}
	}
}

// phoneFrame checks and times one message phone p received and queues its
// answers. It reports whether it queued anything.
func (r *runner) phoneFrame(p *phone, op byte, msg []byte) bool {
	seq, t, ok := frameFields(msg)
	if op != opText || !ok || !bytes.HasSuffix(msg, []byte(`"}`)) {
		p.corrupt++
		return false
	}
	c := p.c
	queued := false
	{
		now := r.now()
		p.chk.see(seq)
		p.uniq.Store(p.chk.unique)
		ph := r.phase.Load()
		if ph == phMeasure {
			if p.h != nil {
				p.h.record(now - t)
			}
			p.meas.Add(1)
		}
		if ph < phDrain && p.active.Load() {
			s := p.sent.Load()
			p.fbuf = appendFrame(p.fbuf[:0], typeData, p.idx, s, now, r.cfg.Size)
			c.AppendText(p.fbuf)
			p.sent.Store(s + 1)
			queued = true
		}
		if p.ackEvery > 0 && p.chk.unique%uint64(p.ackEvery) == 0 {
			p.fbuf = appendAck(p.fbuf[:0], p.idx, p.chk.unique)
			c.AppendText(p.fbuf)
			queued = true
		}
	}
	return queued
}

// kick starts phone p's stream: it sends the first window frames in one
// write, after which the phone keeps window frames in flight itself.
func (r *runner) kick(p *phone, window int) error {
	var buf []byte
	now := r.now()
	for s := range window {
		f := appendFrame(nil, typeData, p.idx, uint64(s), now, r.cfg.Size)
		buf = appendHeader(buf, opText, len(f))
		buf = append(buf, f...)
	}
	c := p.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	p.active.Store(true)
	p.sent.Store(uint64(window))
	_, err := c.nc.Write(buf)
	return err
}

// rateProgress returns a progress function that reports the rate of what
// count returns.
func (r *runner) rateProgress(unit string, count func() uint64) func() string {
	var prev uint64
	prevAt := time.Now()
	return func() string {
		n, now := count(), time.Now()
		rate := float64(n-prev) / now.Sub(prevAt).Seconds()
		prev, prevAt = n, now
		return fmt.Sprintf("conns %d  %s/s %.0f  total %d  errors %d", r.open.Load(), unit, rate, n, r.errCount())
	}
}

func (r *runner) received() uint64 {
	var n uint64
	for _, p := range r.phones {
		n += p.uniq.Load()
	}
	return n
}

func (r *runner) measured() uint64 {
	var n uint64
	for _, p := range r.phones {
		n += p.meas.Load()
	}
	return n
}

func (r *runner) latency() Latency {
	var h hist
	for _, p := range r.phones {
		if p.h != nil {
			h.merge(p.h)
		}
	}
	return h.summary()
}

var errNoConnections = errors.New("no connection could be set up")

func (r *runner) setupFailed() (*Result, error) {
	r.closeAll()
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for k, v := range r.errs {
		fmt.Fprintf(&b, "; %s ×%d", k, v)
		if s, ok := r.samples[k]; ok {
			fmt.Fprintf(&b, " (%s)", s)
		}
	}
	return nil, fmt.Errorf("%w%s", errNoConnections, b.String())
}

// runRT: E echo binaries, P phones each keeping W frames of S bytes in
// flight; round trips per second, latency, relay CPU per round trip.
func (r *runner) runRT() (*Result, error) {
	cfg := r.cfg
	r.beginRelay()
	r.progress = func() string { return fmt.Sprintf("connecting: %d open, %d errors", r.open.Load(), r.errCount()) }
	stop := r.startProgress()
	r.connectBinaries(r.echoLoop)
	r.connectPhones(0, func(p *phone) { p.h = new(hist) }, func(p *phone) { r.phoneLoop(p, 0) })
	if len(r.phones) == 0 {
		stop()
		return r.setupFailed()
	}
	stop()
	r.progress = r.rateProgress("round trips", r.received)
	stop = r.startProgress()
	r.phase.Store(phWarmup)
	for _, p := range r.phones {
		if err := r.kick(p, cfg.Window); err != nil {
			r.addErr("phone "+errKind(err), err)
		}
	}
	sleepCtx(r.ctx, cfg.Warmup)
	w := r.openWindow()
	r.phase.Store(phMeasure)
	sleepCtx(r.ctx, cfg.Duration)
	r.phase.Store(phDrain)
	res := r.result(w, "round_trip", r.measured(), len(r.binaries)+len(r.phones))
	return r.conclude(res, stop), nil
}

// runIdle: hold binaries and phones open (each phone has made one round
// trip first), read the relay's memory, then time round trips on a few of
// them.
func (r *runner) runIdle() (*Result, error) {
	cfg := r.cfg
	r.beginRelay()
	total := cfg.Binaries + cfg.Phones
	r.progress = func() string {
		s := fmt.Sprintf("connections %d/%d  errors %d", r.open.Load(), total, r.errCount())
		if rs, ok := r.relaySample(); ok {
			s += fmt.Sprintf("  relay rss %.1f MiB", mib(rs.total().RSS))
		}
		return s
	}
	stop := r.startProgress()
	defer stop()
	r.connectBinaries(r.echoLoop)
	r.connectPhones(0, func(p *phone) {
		if p.idx < cfg.ProbePhones {
			p.h = new(hist)
		}
	}, func(p *phone) { r.phoneLoop(p, 0) })
	if len(r.phones)+len(r.binaries) == 0 {
		return r.setupFailed()
	}
	conns := len(r.binaries) + len(r.phones)
	hold := r.openWindow()
	var early procSample
	earlyOK := false
	if cfg.IdleAt > 0 && cfg.IdleAt < cfg.Hold {
		sleepCtx(r.ctx, cfg.IdleAt)
		var earlys procsSample
		earlys, earlyOK = r.relaySample()
		early = earlys.total()
		sleepCtx(r.ctx, cfg.Hold-cfg.IdleAt)
	} else {
		sleepCtx(r.ctx, cfg.Hold)
	}
	helds, heldOK := r.relaySample()
	held := helds.total()
	holdCPU := 0.0
	if heldOK && hold.relayOK {
		holdCPU = (held.CPU - hold.relay0.total().CPU).Seconds()
	}

	// Latency probe on the first phones, one frame in flight each.
	w := r.openWindow()
	r.phase.Store(phMeasure)
	for _, p := range r.phones {
		if p.idx < cfg.ProbePhones {
			if err := r.kick(p, 1); err != nil {
				r.addErr("phone "+errKind(err), err)
			}
		}
	}
	sleepCtx(r.ctx, cfg.ProbeDuration)
	r.phase.Store(phDrain)
	res := r.result(w, "round_trip", r.measured(), conns)
	r.drain()
	stop()
	r.closeAll()
	res.Latency = r.latency()
	r.streamTotals(&res.Frames)
	res.Params.Hold = cfg.Hold.Seconds()
	res.Params.Duration = cfg.ProbeDuration.Seconds()
	if rs := res.Relay; rs != nil && heldOK {
		// Memory is what the relay held at the end of the hold, before the
		// probe; CPU is the probe's.
		rs.RSSAfter = held.RSS
		rs.RSSPeak = max(rs.RSSPeak, held.RSS)
		rs.RSSPerConn = float64(held.RSS-rs.RSSBefore) / float64(conns)
		rs.HoldCPUSeconds = holdCPU
		for i := range rs.Procs {
			rs.Procs[i].RSSAfter = helds[i].RSS
		}
		if earlyOK {
			rs.IdleAt = cfg.IdleAt.Seconds()
			rs.RSSIdleAt = early.RSS
			rs.RSSPerConnIdleAt = float64(early.RSS-rs.RSSBefore) / float64(conns)
			rs.SettledCPUSeconds = (held.CPU - early.CPU).Seconds()
			rs.Settled = (cfg.Hold - cfg.IdleAt).Seconds()
		}
	}
	return r.finish(res), nil
}

// fanReader reads a fan-out or stall binary: it learns each phone's conn_id
// from its hello (and echoes the hello so the phone knows it is routed),
// takes acks, and counts close notices.
func (r *runner) fanReader(b *binaryConn) {
	c := b.c
	for {
		op, msg, err := c.ReadMessage()
		if err != nil {
			r.connEnded("binary", err)
			return
		}
		if op != opText {
			r.addErr("binary non-text message", nil)
			continue
		}
		id, ok := envelopeConnID(msg)
		if !ok {
			r.addErr("binary bad envelope", nil)
			continue
		}
		if len(msg) < 256 {
			if code, ok := isNotice(msg); ok {
				r.addNotice(code)
				if p := b.peer(id); p != nil {
					p.gone.Store(true)
					b.nudge()
				}
				continue
			}
		}
		if ack, ok := intField(msg, `"ack":`); ok {
			if p := b.peer(id); p != nil {
				p.acked.Store(uint64(ack))
				b.nudge()
			}
			continue
		}
		if bytes.Contains(msg[:min(len(msg), 256)], []byte(`"type":"`+typeHello+`"`)) {
			idx, ok := intField(msg, `"phone":`)
			if !ok || idx < 0 || int(idx) >= len(r.slots) {
				r.addErr("binary bad hello", nil)
				continue
			}
			p := r.slots[idx]
			b.peersMu.Lock()
			p.connID = append([]byte(nil), id...)
			b.peers[string(id)] = p
			b.peersMu.Unlock()
			if err := c.WriteMessage(msg); err != nil {
				r.connEnded("binary", err)
				return
			}
			continue
		}
		r.addErr("binary unexpected frame", nil)
	}
}

func (b *binaryConn) peer(id []byte) *phone {
	b.peersMu.Lock()
	defer b.peersMu.Unlock()
	return b.peers[string(id)]
}

func (b *binaryConn) nudge() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// fanWriter sends frames round-robin to the binary's phones until the run
// drains: with window > 0 a phone gets a frame only while fewer than window
// are unacknowledged; with 0 (stall) it gets them regardless.
func (r *runner) fanWriter(b *binaryConn, window int) {
	c := b.c
	b.peersMu.Lock()
	peers := make([]*phone, 0, len(b.peers))
	for _, p := range b.peers {
		peers = append(peers, p)
	}
	b.peersMu.Unlock()
	slices.SortFunc(peers, func(x, y *phone) int { return x.idx - y.idx })
	var fb []byte
	for r.phase.Load() < phDrain && r.ctx.Err() == nil {
		sent, live := false, false
		for _, p := range peers {
			if p.gone.Load() {
				continue
			}
			live = true
			s := p.sent.Load()
			if window > 0 && s-p.acked.Load() >= uint64(window) {
				continue
			}
			fb = appendFrame(fb[:0], typeData, p.idx, s, r.now(), r.cfg.Size)
			c.AppendHeader(envelopeLen(p.connID, fb))
			c.Out = appendEnvelope(c.Out, p.connID, fb)
			p.sent.Store(s + 1)
			sent = true
			if len(c.Out) >= 64<<10 {
				if err := c.Flush(); err != nil {
					r.connEnded("binary write", err)
					return
				}
			}
		}
		if err := c.Flush(); err != nil {
			r.connEnded("binary write", err)
			return
		}
		if !live {
			return
		}
		if !sent {
			<-b.wake
		}
	}
}

// prepareSlots makes every phone up front, so binaries can look phones up
// by the index in their hello.
func (r *runner) prepareSlots() {
	r.slots = make([]*phone, r.cfg.Phones)
	for i := range r.slots {
		r.slots[i] = &phone{idx: i}
	}
}

// runFanout: one binary (or a few) sends to many phones, each with a window
// of unacknowledged frames; frames per second delivered, latency from the
// binary's send to the phone's receipt.
func (r *runner) runFanout() (*Result, error) {
	cfg := r.cfg
	stop := r.startFanBinaries()
	ackEvery := max(1, cfg.Window/4)
	r.connectPhones(0, func(p *phone) { p.h = new(hist) }, func(p *phone) { r.phoneLoop(p, ackEvery) })
	stop()
	if len(r.phones) == 0 {
		return r.setupFailed()
	}
	r.progress = r.rateProgress("frames", r.received)
	stop = r.startProgress()
	var writers sync.WaitGroup
	r.phase.Store(phWarmup)
	for _, b := range r.binaries {
		writers.Add(1)
		go func() { defer writers.Done(); r.fanWriter(b, cfg.Window) }()
	}
	sleepCtx(r.ctx, cfg.Warmup)
	w := r.openWindow()
	r.phase.Store(phMeasure)
	sleepCtx(r.ctx, cfg.Duration)
	r.phase.Store(phDrain)
	res := r.result(w, "frame", r.measured(), len(r.binaries)+len(r.phones))
	for _, b := range r.binaries {
		b.nudge()
	}
	writers.Wait()
	return r.conclude(res, stop), nil
}

// runStall: phones that never read (with a small receive buffer) and a
// binary sending to all of them as fast as it can. The relay must close
// them when their queues overflow and keep its memory under the sum of the
// queue budgets.
func (r *runner) runStall() (*Result, error) {
	cfg := r.cfg
	stop := r.startFanBinaries()
	r.connectPhones(cfg.StallRecvBuf, nil, nil)
	stop()
	if len(r.phones) == 0 {
		return r.setupFailed()
	}
	bases, baseOK := r.relaySample()
	base := bases.total()
	if r.watch != nil { // sample the peak finely while the flood runs
		r.watch.Stop()
		r.watch = watchProcs(cfg.RelayPIDs, 10*time.Millisecond)
	}
	sent := func() uint64 {
		var n uint64
		for _, p := range r.phones {
			n += p.sent.Load()
		}
		return n
	}
	gone := func() int {
		n := 0
		for _, p := range r.phones {
			if p.gone.Load() {
				n++
			}
		}
		return n
	}
	r.progress = func() string {
		return fmt.Sprintf("frames sent %d  phones closed %d/%d  errors %d", sent(), gone(), len(r.phones), r.errCount())
	}
	stop = r.startProgress()
	w := r.openWindow()
	r.phase.Store(phMeasure)
	var writers sync.WaitGroup
	for _, b := range r.binaries {
		writers.Add(1)
		go func() { defer writers.Done(); r.fanWriter(b, 0) }()
	}
	end := time.Now().Add(cfg.Duration)
	for time.Now().Before(end) && gone() < len(r.phones) && r.ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	r.phase.Store(phDrain)
	for _, b := range r.binaries {
		b.nudge()
	}
	res := r.result(w, "frame", sent(), len(r.binaries)+len(r.phones))
	// The writers may be blocked on a relay that stopped reading; closing
	// the connections (below) releases them.
	stop()
	after := base
	if sleepCtx(r.ctx, time.Second) {
		if a, ok := r.relaySample(); ok {
			after = a.total()
		}
	}
	r.closeAll()
	writers.Wait()
	res.Frames.Sent = res.Ops
	st := &StallStats{PhoneQueueBytes: int64(cfg.PhoneQueueBytes), PhonesClosed: int64(gone())}
	st.BudgetSum = st.PhoneQueueBytes * int64(len(r.phones))
	if rs := res.Relay; rs != nil && baseOK {
		st.RSSGrowth = rs.RSSPeak - base.RSS
		st.Bounded = st.RSSGrowth < st.BudgetSum
		st.RSSAfterClose = after.RSS
	}
	res.Stall = st
	r.finish(res)
	res.OK = res.OK && (res.Relay == nil || st.Bounded)
	return res, nil
}

// runChurn: phones connect, handshake (one frame through an echo binary and
// back) and close with a close handshake, at a target rate.
func (r *runner) runChurn() (*Result, error) {
	cfg := r.cfg
	r.beginRelay()
	r.connectBinaries(r.echoLoop)
	if len(r.binaries) == 0 {
		return r.setupFailed()
	}
	var cycles atomic.Uint64
	r.progress = r.rateProgress("cycles", cycles.Load)
	stop := r.startProgress()
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.Rate)
	}
	hists := make([]*hist, cfg.Concurrency)
	var slot atomic.Int64
	var next atomic.Int64
	w := r.openWindow()
	r.phase.Store(phMeasure)
	start := time.Now()
	end := start.Add(cfg.Duration)
	maxOps := int64(math.MaxInt64)
	if cfg.Rate > 0 {
		maxOps = int64(cfg.Rate*cfg.Duration.Seconds()) + 1
	}
	parallel(r.ctx, cfg.Concurrency, cfg.Concurrency, func(int) {
		h := new(hist)
		hists[slot.Add(1)-1] = h
		for r.ctx.Err() == nil {
			k := next.Add(1) - 1
			if k >= maxOps {
				return
			}
			at := start.Add(time.Duration(k) * interval)
			if at.After(end) || time.Now().After(end) {
				return
			}
			if d := time.Until(at); d > 0 && !sleepCtx(r.ctx, d) {
				return
			}
			p := &phone{idx: int(k), bin: r.binaries[int(k)%len(r.binaries)].idx}
			t0 := time.Now()
			if r.dialPhone(p, false, 0) != nil {
				continue
			}
			code := p.c.CloseHandshake(1000, 2*time.Second)
			r.open.Add(-1)
			if code != 1000 {
				r.addErr(fmt.Sprintf("phone close answered %d", code), nil)
				continue
			}
			h.record(int64(time.Since(t0)))
			cycles.Add(1)
		}
	})
	r.phase.Store(phDrain)
	res := r.result(w, "cycle", cycles.Load(), 0)
	// Let the binaries' close notices for the last cycles arrive.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline) && r.noticeCount() < int64(cycles.Load()); {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	r.closeAll()
	var h hist
	for _, x := range hists {
		if x != nil {
			h.merge(x)
		}
	}
	res.Latency = h.summary()
	res.Params.Rate = cfg.Rate
	return r.finish(res), nil
}

// conclude ends a timed run: waits for frames still in flight, stops the
// progress line, closes every connection and fills in the totals.
func (r *runner) conclude(res *Result, stop func()) *Result {
	r.drain()
	stop()
	r.closeAll()
	res.Latency = r.latency()
	r.streamTotals(&res.Frames)
	res.Params.Warmup = r.cfg.Warmup.Seconds()
	return r.finish(res)
}

// startFanBinaries prepares the phone slots, starts reading the relay's
// figures and a "connecting" progress line, and connects the fan-out
// binaries. It returns the progress line's stop.
func (r *runner) startFanBinaries() (stop func()) {
	r.prepareSlots()
	r.beginRelay()
	r.progress = func() string { return fmt.Sprintf("connecting: %d open, %d errors", r.open.Load(), r.errCount()) }
	stop = r.startProgress()
	r.connectBinaries(r.fanReader)
	return stop
}

// runChat: traffic like people's. Each phone stays silent for a random
// pause in [PauseMin, PauseMax], sends one frame, and again, until Duration
// ends; echo binaries send each frame back. The pauses are meant to outlast
// the relay's heartbeats and write timeouts, so every frame is the first
// thing on an idle pair in a long while. Every frame must come back once, in
// order, and no connection may drop; each round trip is timed.
func (r *runner) runChat() (*Result, error) {
	cfg := r.cfg
	r.beginRelay()
	r.progress = func() string { return fmt.Sprintf("connecting: %d open, %d errors", r.open.Load(), r.errCount()) }
	stop := r.startProgress()
	r.connectBinaries(r.echoLoop)
	r.connectPhones(0, func(p *phone) { p.h = new(hist) }, func(p *phone) { r.phoneLoop(p, 0) })
	stop()
	if len(r.phones) == 0 {
		return r.setupFailed()
	}
	sent := func() uint64 {
		var n uint64
		for _, p := range r.phones {
			n += p.sent.Load()
		}
		return n
	}
	r.progress = func() string {
		return fmt.Sprintf("conns %d  frames sent %d  received %d  dropped %d  errors %d",
			r.open.Load(), sent(), r.received(), r.dropped.Load(), r.errCount())
	}
	stop = r.startProgress()
	w := r.openWindow()
	r.phase.Store(phMeasure)
	end := time.Now().Add(cfg.Duration)
	talks := make([]chatTally, len(r.phones))
	var talkers sync.WaitGroup
	for i, p := range r.phones {
		talkers.Add(1)
		go func() { defer talkers.Done(); talks[i] = r.talk(p, end) }()
	}
	sleepCtx(r.ctx, time.Until(end)) // connections stay open, and are watched, to the end
	talkers.Wait()                   // each stops before a pause that would outlast the run
	r.drain()                        // still measuring: the last frames count too
	r.phase.Store(phDrain)
	res := r.result(w, "round_trip", r.measured(), len(r.binaries)+len(r.phones))
	stop()
	r.closeAll()
	res.Latency = r.latency()
	r.streamTotals(&res.Frames)
	res.Params.PauseMin = cfg.PauseMin.Seconds()
	res.Params.PauseMax = cfg.PauseMax.Seconds()
	st := &ChatStats{}
	for _, t := range talks {
		st.LongestPause = max(st.LongestPause, t.longest.Seconds())
		st.AfterPing += t.afterPing
		if t.frames == 0 {
			st.SilentPhones++
		}
	}
	res.Chat = st
	return r.finish(res), nil
}

// chatTally is what one chat phone did.
type chatTally struct {
	frames    uint64
	afterPing uint64        // frames sent after a pause in which the relay pinged the phone
	longest   time.Duration // longest pause before a frame
}

// talk sends phone p's frames, each after a random pause, until the next
// pause would end after end or the phone's connection has dropped (its
// reader reports that). A write that fails ends it too.
func (r *runner) talk(p *phone, end time.Time) chatTally {
	var t chatTally
	var buf []byte
	for r.ctx.Err() == nil {
		pause := r.cfg.PauseMin + rand.N(r.cfg.PauseMax-r.cfg.PauseMin+1)
		if time.Now().Add(pause).After(end) {
			return t
		}
		pings := p.c.Pings()
		start := time.Now()
		if !sleepCtx(r.ctx, pause) || p.gone.Load() {
			return t
		}
		silent := time.Since(start)
		pinged := p.c.Pings() > pings // read before the write: only pings during the pause count
		s := p.sent.Load()
		buf = appendFrame(buf[:0], typeData, p.idx, s, r.now(), r.cfg.Size)
		p.sent.Store(s + 1)
		if err := p.c.WriteMessageWithin(buf, r.cfg.ConnectTimeout); err != nil {
			r.addErr("phone write "+errKind(err), err)
			return t
		}
		t.frames++
		t.longest = max(t.longest, silent)
		if pinged {
			t.afterPing++
		}
	}
	return t
}
