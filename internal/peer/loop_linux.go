//go:build linux

package peer

import (
	"sync"
	"time"
	"unsafe"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
	"github.com/pyrycode/pyrycode-relay/internal/evloop"
	"golang.org/x/sys/unix"
)

// loopConn is the event-loop side of a Conn served by an evloop.Loop
// instead of a reader goroutine. Its fields belong to the loop's goroutine
// unless marked otherwise; the state it shares with other goroutines (the
// queue, the close state, the writer role) stays in Conn under Conn.mu.
//
// Roles: the loop reads and parses input (frameReader), runs the handler,
// fires the connection's timers and writes whatever the caller of Send did
// not write inline. "Conn.writing" keeps its meaning: one writer at a time,
// either a goroutine writing inline or the loop (then lflush is set).
type loopConn struct {
	c  *Conn
	l  *evloop.Loop
	fd int // -1 until attached and after the socket is closed (Conn.mu)

	tls *tlsSock // a TLS connection's sock (tlsloop_linux.go); nil for plain TCP

	placed *evloop.Placement // of PlaceBy, given back when the connection ends

	h      Handler // an Ender (Start)
	fr     frameReader
	rest   int // input left in the loop's buffer after the message being handled
	saved  *bufpool.Buf
	savedN int

	readT  evloop.Timer // message deadline, then the close wait
	hbT    evloop.Timer
	writeT evloop.Timer

	// Writer state, loop only: frames taken from the queue and being
	// written, the next one to write, bytes of it already written, and the
	// end of the current write (a batch of at most maxBatch frames and
	// about writeChunk bytes, which must finish within WriteTimeout).
	wq   []item
	wpos int
	woff int
	wend int

	slot   evloop.Slot // the socket's registration with the loop; -1 when not registered
	events uint8       // what the socket is registered for (EventIn, EventOut)

	// Guarded by Conn.mu.
	work   uint8 // work posted to the loop (workFlush, ...)
	lflush bool  // the loop holds the writer role

	// Loop only.
	paused   bool // the handler parked the connection: no reading until resumed
	msgT     bool // readT is a message deadline ...
	timed    bool // ... set for the message now arriving
	started  bool
	ended    bool // teardown ran: no more input
	flushEnd bool // ... and what is queued is written before the socket closes
	finished bool
}

// The timers' callbacks are plain functions that find their loopConn from
// the timer's address (each timer is a field of one): method values would
// be three closures allocated per connection, 48 bytes.
func fireRead(t *evloop.Timer)      { ownerOf(t, unsafe.Offsetof(loopConn{}.readT)).onReadTimer() }
func fireWrite(t *evloop.Timer)     { ownerOf(t, unsafe.Offsetof(loopConn{}.writeT)).onWriteTimer() }
func fireHeartbeat(t *evloop.Timer) { ownerOf(t, unsafe.Offsetof(loopConn{}.hbT)).onHeartbeat() }

// ownerOf returns the loopConn whose field at offset off is t.
func ownerOf(t *evloop.Timer, off uintptr) *loopConn {
	return (*loopConn)(unsafe.Add(unsafe.Pointer(t), -int(off)))
}

// vecScratch is a write's frame headers and iovec list. It is taken for
// one flush, not kept per connection (2.7 KiB an idle connection would
// hold for nothing): headers are rebuilt for every writev of a batch.
type vecScratch struct {
	hdrs [maxBatch * 10]byte
	iov  [2 * maxBatch]unix.Iovec
}

var vecPool = sync.Pool{New: func() any { return new(vecScratch) }}

// Conn.mu-guarded flags of a loopConn (in loopConn.work).
const (
	workFlush  = 1 << iota // the loop holds the writer role and must write
	workResume             // the handler's parked delivery is done
	workAbort              // close the socket at once
	workFinish             // an inline writer gave the writer role back after teardown
)

func newLoopConn(c *Conn) *loopConn {
	return &loopConn{c: c, l: c.opt.Loops.Pick(), fd: -1, slot: -1}
}

// Start serves the connection: on an event loop when it was made with one
// (Options.Loops, a plain TCP socket), otherwise on a new goroutine. onEnd
// runs once, on a goroutine of its own, with how the connection ended,
// after the socket is closed and everything released; with a nil onEnd, h
// must be an Ender and its Ended runs instead (no closure to keep for the
// connection's life). Start is called once, instead of Run, after any
// HoldWrites has been released.
func (c *Conn) Start(h Handler, onEnd func(CloseInfo)) {
	if onEnd != nil {
		h = &endFunc{h, onEnd}
	}
	e := h.(Ender)
	switch {
	case c.ls == nil:
		go func() { e.Ended(c.Run(h)) }()
	case !c.ls.attach(h):
		// c.ls stays: the Conn may be shared already (a claimed
		// binary), and other goroutines read it without a lock.
		c.ls.failStart(e)
	}
}

// OnLoop reports whether the connection is served by an event loop: its
// handler must then never block (see Park).
func (c *Conn) OnLoop() bool { return c.ls != nil }

// PlaceBy makes c be served on the event loop of key (a server-id, see
// evloop.Group.Place), so that a binary and its phones share one loop:
// frames between them never wake another loop, and what one batch of
// input sends to the other is written once, at the batch's end (see
// SameLoop). It must be called right after New, before the Conn is shared,
// at most once. The placement is given back when the connection ends; a
// Conn that is never started must call Unplace.
func (c *Conn) PlaceBy(key string) {
	if c.ls != nil && c.ls.placed == nil && key != "" {
		c.ls.l, c.ls.placed = c.opt.Loops.Place(key)
	}
}

// Unplace gives back the placement of a Conn that will never be started
// (dropped right after its upgrade). Started connections give it back
// when they end.
func (c *Conn) Unplace() {
	if c.ls != nil {
		c.ls.unplace()
	}
}

func (ls *loopConn) unplace() {
	if ls.placed != nil {
		ls.c.opt.Loops.Unplace(ls.placed)
		ls.placed = nil
	}
}

// SameLoop reports whether c and o are served by the same event loop. A
// handler running on that loop that sends to o may then pass now=false
// even for the last message of its input: the send is queued and the
// loop writes everything queued during the batch once the batch is done,
// instead of one system call per sender.
func (c *Conn) SameLoop(o *Conn) bool {
	return c.ls != nil && o != nil && o.ls != nil && c.ls.l == o.ls.l
}

// Defer runs t on the connection's event loop once the loop has handled
// every socket that is ready now (tasks run after the batch of ready
// sockets), so that work several handlers of one batch contribute to is done
// once, without waiting for anything else. It reports false, doing nothing,
// when the connection is not on a loop. Only the connection's handler may
// call it.
func (c *Conn) Defer(t evloop.Task) bool {
	if c.ls == nil {
		return false
	}
	c.ls.l.Post(t)
	return true
}

// Park stops reading the connection until the returned function is
// called. A handler on an event loop calls it before it hands a message
// to a goroutine that may have to wait (back-pressure); the goroutine
// calls the function when it is done. Input already read waits, in order.
// In goroutine mode Park is never needed; it returns a no-op.
func (c *Conn) Park() (resume func()) {
	ls := c.ls
	if ls == nil {
		return func() {}
	}
	ls.paused = true
	return func() {
		c.mu.Lock()
		ls.work |= workResume
		c.mu.Unlock()
		ls.l.Post(ls)
	}
}

// attach takes the socket over from the Go runtime (a descriptor of its
// own, the net.Conn's closed) and hands the connection to its loop. It
// reports false, changing nothing, when the socket cannot be taken.
func (ls *loopConn) attach(h Handler) bool {
	c := ls.c
	fd := -1
	var derr error
	raw, tcp := ls.sockets()
	if raw == nil {
		return false
	}
	if err := raw.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || derr != nil {
		return false
	}
	ls.h = h
	ls.fr = newFrameReader(c.opt)
	c.mu.Lock()
	ls.fd = fd
	if ls.tls != nil {
		ls.tls.loop = true
	}
	ls.work |= workFlush // whatever was queued before
	c.mu.Unlock()
	// Closing the runtime's descriptor takes it out of the Go poller; the
	// socket lives on in ours. A wrapping net.Conn (connection accounting)
	// is closed only when the connection ends.
	_ = tcp.Close()
	acct := c.nc
	if ls.tls != nil {
		// Under TLS the accounting wrapper is the sock's own connection.
		ls.tls.tcp, ls.tls.raw = nil, nil
		acct = ls.tls.Conn
	}
	if r, ok := acct.(interface{ ReleaseSocket() }); ok {
		// The wrapper need not keep the closed socket's objects for the
		// connection's life (an idle connection's largest part after
		// its own records).
		r.ReleaseSocket()
	}
	ls.l.Post(ls)
	return true
}

// failStart ends a connection whose socket could not be taken over (no
// descriptor left): it is closed without a handshake, as if dropped.
func (ls *loopConn) failStart(e Ender) {
	c := ls.c
	c.mu.Lock()
	c.setInfoLocked(CloseInfo{Code: 1011, Dropped: true})
	c.leaveOpenLocked()
	c.state = stClosed
	c.writing = true // nobody writes to it any more
	c.dropAllLocked()
	c.wakeSpaceLocked()
	c.probe = nil
	c.mu.Unlock()
	c.hangUp()
	ls.unplace()
	c.markDone()
	go e.Ended(c.Info())
}

// RunTask is the loop's entry for posted work (evloop.Task).
func (ls *loopConn) RunTask() {
	c := ls.c
	c.mu.Lock()
	if ls.fd < 0 {
		// Not attached yet (attach posts again) or finished.
		c.mu.Unlock()
		return
	}
	work := ls.work
	ls.work = 0
	c.mu.Unlock()
	if !ls.started {
		ls.started = true
		ls.start()
	}
	if work&workAbort != 0 && !ls.ended {
		ls.teardown(false)
	}
	if work&workResume != 0 && ls.paused && !ls.ended {
		ls.paused = false
		ls.resume()
	}
	if work&workFlush != 0 {
		ls.flush()
	}
	if ls.ended {
		ls.tryFinish()
	}
}

// start registers the socket and begins the connection's life on the loop.
func (ls *loopConn) start() {
	c := ls.c
	ls.events = evloop.EventIn
	var err error
	if ls.slot, err = ls.l.Add(ls.fd, uint32(ls.events), ls); err != nil {
		ls.events, ls.slot = 0, -1
		ls.teardown(false)
		return
	}
	ls.readT.F = fireRead
	ls.writeT.F = fireWrite
	ls.hbT.F = fireHeartbeat
	if c.opt.HeartbeatInterval > 0 {
		c.nextPing = evloop.Now() + int64(c.opt.HeartbeatInterval)
		ls.l.Arm(&ls.hbT, evloop.Now()+int64(c.opt.HeartbeatInterval))
	}
	if s := ls.saved; s != nil { // input read along with the request
		ls.saved = nil
		ls.input(s.B[:ls.savedN])
		s.Release()
	}
	if ls.tls != nil {
		ls.tlsDrain() // input crypto/tls read along with the request
	}
}

// OnEvents is the loop's callback for the socket (evloop.Handler).
func (ls *loopConn) OnEvents(ev uint32) {
	if ls.finished {
		return
	}
	if ev&evloop.EventOut != 0 {
		ls.flush()
		if ls.finished {
			return
		}
	}
	if ls.ended {
		if ev&(evloop.EventErr|evloop.EventHup) != 0 {
			ls.flushEnd = false // nobody will read what is left
		}
		ls.tryFinish()
		return
	}
	if ls.paused {
		if ev&(evloop.EventErr|evloop.EventHup) != 0 {
			ls.teardown(false)
			ls.tryFinish()
		}
		return
	}
	if ev&(evloop.EventIn|evloop.EventErr|evloop.EventHup) == 0 {
		return
	}
	if ls.tls != nil {
		ls.tlsReadable()
		return
	}
	// One read per readiness (the socket is level-triggered: what is
	// left is reported again), so that one busy peer cannot keep the loop
	// from the others.
	buf := ls.l.Buf()[:ls.c.opt.ReadSize]
	n, err := evloop.Read(ls.fd, buf)
	if err == unix.EAGAIN {
		return
	}
	if n <= 0 {
		ls.teardown(false) // the peer hung up or the socket failed
		ls.tryFinish()
		return
	}
	ls.input(buf[:n])
	if ls.ended {
		ls.tryFinish()
	}
}

// input runs p through the frame reader, handling what it reports, until
// p is used up, the handler parks the connection or the connection ends.
func (ls *loopConn) input(p []byte) {
	c := ls.c
	var stamp int64 // what one read returned arrived at once: one clock read
	for len(p) > 0 && !ls.ended {
		n, ev := ls.fr.next(p)
		p = p[n:]
		ls.rest = len(p)
		switch ev {
		case rdMessage:
			ls.timed = false
			buf, op, payload := ls.fr.takeMessage()
			if !c.Open() {
				buf.Release()
				continue
			}
			if c.opt.StampReads {
				if stamp == 0 {
					stamp = time.Now().UnixNano()
				}
				buf.Stamp = stamp
			}
			ls.h.HandleMessage(c, op, buf, payload)
			if ls.paused {
				// Time spent parked is the relay's, not the peer's:
				// the message deadline starts afresh on resume.
				ls.save(p)
				ls.rest = 0
				if ls.msgT {
					ls.l.Stop(&ls.readT)
					ls.msgT, ls.timed = false, false
				}
				ls.setEvents()
				return
			}
		case rdControl:
			pl := ls.fr.takeControl()
			switch ls.fr.cur.op {
			case OpPing:
				c.sendControl(OpPong, pl)
			case OpPong:
				c.gotPong()
			case OpClose:
				code, err := parseClosePayload(pl, c.opt.CodeAllowed)
				switch {
				case err == errBadCloseText:
					c.Close(c.opt.ReasonInvalidUTF8, false)
					ls.teardown(true)
				case err != nil:
					c.Close(c.opt.ReasonProtocol, false)
					ls.teardown(true)
				default:
					ls.teardown(c.peerClosed(code))
				}
				return
			}
			if !ls.fr.inMsg {
				ls.timed = false
			}
		case rdFail:
			cl := c.opt.ReasonProtocol
			if ls.fr.failCl == failTooBig {
				cl = c.opt.ReasonTooBig
			}
			ls.fail(cl)
		case rdPeerClose:
			// Both close frames have passed (ours is queued or out):
			// hang up once ours is written.
			ls.teardown(true)
			return
		}
	}
	ls.rest = 0
	ls.armMessageDeadline()
}

// armMessageDeadline sets, keeps or clears the message deadline as the
// reader goroutine's armDeadline does: a message that has begun arriving
// must finish within MessageTimeout of the first wait for its rest, each
// message gets its own deadline, and an idle connection has none. Once our
// close frame is out, or input is being discarded, the read timer belongs
// to the close wait.
func (ls *loopConn) armMessageDeadline() {
	if ls.ended || ls.fr.discard || ls.c.closing.Load() {
		return
	}
	switch mid := ls.fr.midMessage(); {
	case mid && !ls.timed:
		ls.l.Arm(&ls.readT, evloop.Now()+int64(ls.c.opt.MessageTimeout))
		ls.msgT, ls.timed = true, true
	case !mid && ls.msgT:
		ls.l.Stop(&ls.readT)
		ls.msgT, ls.timed = false, false
	}
}

// fail closes with cl after a read-side violation; the reader discards
// from now on, within the close wait.
func (ls *loopConn) fail(cl Close) {
	c := ls.c
	c.Close(cl, false)
	ls.fr.startDiscard()
	if !c.closing.Load() {
		ls.msgT = false
		ls.l.Arm(&ls.readT, evloop.Now()+int64(c.opt.CloseWait))
	}
}

func (ls *loopConn) onReadTimer() {
	c := ls.c
	if ls.ended {
		return
	}
	if ls.msgT && !ls.fr.discard && !c.closing.Load() && c.Open() {
		// A message did not finish arriving in time.
		ls.msgT = false
		ls.fail(c.opt.ReasonMessageTimeout)
		return
	}
	ls.teardown(false) // the close wait is over
	ls.tryFinish()
}

// save keeps the unread input of a parked connection (or, before it
// starts, what was read along with its request).
func (ls *loopConn) save(p []byte) {
	if len(p) == 0 {
		return
	}
	ls.saved = bufpool.Get(len(p))
	ls.savedN = copy(ls.saved.B, p)
}

// resume continues after a parked delivery: the saved input first.
func (ls *loopConn) resume() {
	if s := ls.saved; s != nil {
		ls.saved = nil
		ls.input(s.B[:ls.savedN])
		s.Release()
		if ls.ended {
			return
		}
	} else {
		ls.armMessageDeadline()
	}
	if ls.tls != nil {
		ls.tlsDrain() // what crypto/tls holds is not reported by the socket
	}
	if !ls.paused {
		ls.setEvents()
	}
}

// setEvents registers the socket for what the connection waits for:
// input unless parked or ended, writability while a write waits.
func (ls *loopConn) setEvents() {
	var ev uint8
	if !ls.paused && !ls.ended {
		ev |= evloop.EventIn
	}
	if ls.wpos < len(ls.wq) {
		ev |= evloop.EventOut
	}
	if ev != ls.events && ls.fd >= 0 {
		ls.events = ev
		_ = ls.l.Modify(ls.fd, ls.slot, uint32(ev))
	}
}

func (ls *loopConn) onHeartbeat() {
	if ls.ended {
		return
	}
	ls.dropQueues()
	if wait, ok := ls.c.heartbeatTick(); ok {
		ls.l.Arm(&ls.hbT, evloop.Now()+int64(wait))
	}
}

// A drained queue whose capacity (in frames) is from keepQueueMin to
// keepQueueMax keeps its storage until the next heartbeat (for good when
// heartbeats are off): two slices of at most 6 KiB each per connection,
// and only once it has queued several frames at a time.
const (
	keepQueueMin = 4
	keepQueueMax = 128
)

func keptQueue(n int) bool { return n >= keepQueueMin && n <= keepQueueMax }

// dropQueues gives back the storage of a drained queue and write batch
// that refill kept, so that a connection idle for a heartbeat interval
// holds none. Loop only.
func (ls *loopConn) dropQueues() {
	c := ls.c
	c.mu.Lock()
	if len(c.q) == 0 && !c.writing {
		c.q = nil
	}
	c.mu.Unlock()
	if len(ls.wq) == 0 {
		ls.wq = nil
	}
}

// FlushOver writes what is queued for c now, instead of when its loop's
// pass is done, once at least min bytes (as charged against QueueBytes)
// wait and the loop holds c's writer role. It must be called on c's own
// loop: by the handler of a connection for which SameLoop(c) is true. A
// sender that defers its frames to the end of the pass (now=false) calls
// it so that one large read of small frames cannot fill c's queue before
// anything is written.
func (c *Conn) FlushOver(min int) {
	ls := c.ls
	if ls == nil {
		return
	}
	c.mu.Lock()
	ok := c.queued >= min && ls.lflush && ls.fd >= 0
	c.mu.Unlock()
	if ok {
		ls.flush()
	}
}

// requestFlush hands the writer role to the loop. Called with Conn.mu
// held, by whoever just set Conn.writing.
func (ls *loopConn) requestFlush() {
	ls.work |= workFlush
	ls.lflush = true
	ls.l.Post(ls)
}

// flush writes what is queued, without ever waiting: what the socket does
// not take waits for writability (EventOut) under the write deadline.
func (ls *loopConn) flush() {
	c := ls.c
	var vs *vecScratch
	defer func() {
		if vs != nil {
			clear(vs.iov[:]) // no stale pointers into released buffers
			vecPool.Put(vs)
		}
	}()
	for !ls.finished {
		if ls.wpos >= len(ls.wq) {
			if !ls.refill() {
				return
			}
		}
		if vs == nil {
			vs = vecPool.Get().(*vecScratch)
		}
		done, err := ls.writeSome(vs)
		if err != nil {
			info := CloseInfo{Code: 1001, ByPeer: true, Dropped: true}
			ls.writeFailed(info)
			return
		}
		if !done {
			if !ls.writeT.Armed() {
				ls.l.Arm(&ls.writeT, evloop.Now()+int64(c.opt.WriteTimeout))
			}
			ls.setEvents()
			return
		}
	}
}

// refill takes the queued frames for writing. It reports false, giving up
// the writer role, when there are none (or the loop does not hold it).
func (ls *loopConn) refill() bool {
	c := ls.c
	clear(ls.wq)
	ls.wq, ls.wpos, ls.woff, ls.wend = ls.wq[:0], 0, 0, 0
	c.mu.Lock()
	if !ls.lflush || ls.fd < 0 {
		c.mu.Unlock()
		ls.setEvents()
		return false
	}
	ctl, items := c.ctl, c.q
	if (len(items) == 0 && len(ctl) == 0) || c.wfailed {
		c.writing, ls.lflush = false, false
		if len(c.q) == 0 && !keptQueue(cap(c.q)) {
			// Nothing left to write: a connection that queues a frame
			// now and then keeps no queue storage (the next frame
			// allocates it again). A busier one keeps its two slices,
			// which would otherwise grow afresh after every pass,
			// until its next heartbeat (dropQueues).
			c.q = nil
		}
		c.mu.Unlock()
		if !keptQueue(cap(ls.wq)) {
			ls.wq = nil
		}
		ls.setEvents()
		return false
	}
	if len(ctl) == 0 {
		// The usual case: the queue becomes the batch and the emptied
		// batch the queue, with no copy.
		c.q = ls.wq[:0]
		c.mu.Unlock()
		ls.wq = items
		return true
	}
	c.ctl, c.q = nil, ls.wq[:0]
	c.mu.Unlock()
	// The rest of a frame an inline write began goes before any control
	// frame, or the control frame would land inside it.
	head := 0
	if len(items) > 0 && items[0].op == opRaw {
		head = 1
	}
	wq := append(make([]item, 0, len(items)+len(ctl)), items[:head]...)
	wq = append(wq, ctl...)
	ls.wq = append(wq, items[head:]...)
	return true
}

// writeSome writes the current batch (starting one if none is under
// way) with one writev. It reports whether the batch is done; frames
// written are released as they complete.
func (ls *loopConn) writeSome(vs *vecScratch) (bool, error) {
	if ls.tls != nil {
		return ls.tlsWriteSome()
	}
	if ls.wend <= ls.wpos {
		// A new write: at most maxBatch frames, about writeChunk bytes.
		k, size := ls.wpos, 0
		for ; k < len(ls.wq) && k-ls.wpos < maxBatch && (k == ls.wpos || size+len(ls.wq[k].data) <= writeChunk); k++ {
			size += len(ls.wq[k].data)
			if ls.wq[k].op == OpClose {
				k++
				break
			}
		}
		ls.wend = k
		ls.l.Stop(&ls.writeT) // the deadline is per write
	}
	iov := vs.iov[:0]
	h := vs.hdrs[:]
	skip := ls.woff
	for i := ls.wpos; i < ls.wend; i++ {
		it := &ls.wq[i]
		var hdr []byte
		if it.op != opRaw {
			n := putHeader(h, it.op, len(it.data))
			hdr, h = h[:n], h[n:]
		}
		for _, part := range [2][]byte{hdr, it.data} {
			if skip >= len(part) {
				skip -= len(part)
				continue
			}
			part = part[skip:]
			skip = 0
			iov = append(iov, unix.Iovec{Base: &part[0], Len: uint64(len(part))})
		}
	}
	n, err := evloop.Writev(ls.fd, iov)
	if err == unix.EAGAIN {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// Retire what was written.
	written, sentClose := 0, false
	var now int64
	for ls.wpos < ls.wend {
		it := &ls.wq[ls.wpos]
		size := len(it.data)
		if it.op != opRaw {
			size += headerLen(len(it.data))
		}
		if ls.woff+n < size {
			ls.woff += n
			break
		}
		n -= size - ls.woff
		ls.woff = 0
		ls.wpos++
		w, cl := ls.retire(it, &now)
		written += w
		sentClose = sentClose || cl
	}
	ls.credit(written)
	if sentClose {
		ls.closeFrameOut()
	}
	if ls.wpos < ls.wend {
		return false, nil
	}
	ls.l.Stop(&ls.writeT)
	if sentClose && ls.ended {
		ls.tryFinish()
	}
	return true, nil
}

// retire releases a frame that is on the wire and reports the bytes it
// was charged and whether it was our close frame; now is the write's time,
// read on first need (the forward metric).
func (ls *loopConn) retire(it *item, now *int64) (int, bool) {
	c := ls.c
	charged := 0
	if it.op == OpText || it.op == opRaw {
		charged = it.cost
		if c.opt.OnWritten != nil && it.buf != nil && it.buf.Stamp != 0 {
			if *now == 0 {
				*now = time.Now().UnixNano()
			}
			c.opt.OnWritten(it.buf.Stamp, *now)
		}
	}
	isClose := it.op == OpClose
	it.buf.Release()
	*it = item{}
	return charged, isClose
}

// credit gives written bytes back to the queue's budget.
func (ls *loopConn) credit(written int) {
	if written == 0 {
		return
	}
	c := ls.c
	c.mu.Lock()
	c.addQueuedLocked(-written)
	if c.queued < c.opt.QueueBytes {
		c.wakeSpaceLocked()
	}
	c.mu.Unlock()
}

// closeFrameOut runs once our close frame is on the wire: nothing follows
// it, and the read timer now bounds the wait for the peer's.
func (ls *loopConn) closeFrameOut() {
	ls.dropWritten()
	ls.c.closing.Store(true)
	if !ls.ended {
		ls.msgT = false
		ls.l.Arm(&ls.readT, evloop.Now()+int64(ls.c.opt.CloseWait))
	}
}

// dropWritten releases the frames taken for writing that are not written.
func (ls *loopConn) dropWritten() {
	c := ls.c
	n := 0
	for i := ls.wpos; i < len(ls.wq); i++ {
		it := &ls.wq[i]
		if it.op == OpText || it.op == opRaw {
			n += it.cost
		}
		it.buf.Release()
		*it = item{}
	}
	ls.wpos, ls.woff, ls.wend = len(ls.wq), 0, 0
	if n > 0 {
		c.mu.Lock()
		c.addQueuedLocked(-n)
		c.mu.Unlock()
	}
}

func (ls *loopConn) onWriteTimer() {
	ls.writeFailed(CloseInfo{Code: 1011, Dropped: true})
}

// writeFailed ends the connection after a failed or timed-out write.
func (ls *loopConn) writeFailed(info CloseInfo) {
	c := ls.c
	ls.dropWritten()
	c.mu.Lock()
	c.wfailed = true
	c.dropDataLocked()
	c.setInfoLocked(info)
	c.leaveOpenLocked()
	c.mu.Unlock()
	ls.flushEnd = false
	if !ls.ended {
		ls.teardown(false)
	}
	ls.tryFinish()
}

// teardown ends the connection's input: the reader goroutine's teardown
// up to closing the socket, which tryFinish does once nothing is left to
// write (with flush, our close frame) or at once.
func (ls *loopConn) teardown(flush bool) {
	c := ls.c
	if ls.ended {
		return
	}
	ls.ended, ls.flushEnd, ls.paused = true, flush, false
	ls.l.Stop(&ls.hbT)
	ls.l.Stop(&ls.readT)
	ls.fr.release()
	if ls.saved != nil {
		ls.saved.Release()
		ls.saved = nil
	}
	c.mu.Lock()
	c.setInfoLocked(CloseInfo{Code: 1001, ByPeer: true, Dropped: true})
	c.leaveOpenLocked()
	c.state = stClosed
	c.dropDataLocked()
	if !flush {
		c.dropAllLocked()
	}
	c.wakeSpaceLocked()
	c.probe = nil
	c.mu.Unlock()
	ls.setEvents()
}

// tryFinish closes the socket once the connection has ended and no write
// is under way that must finish first.
func (ls *loopConn) tryFinish() {
	c := ls.c
	if !ls.ended || ls.finished {
		return
	}
	c.mu.Lock()
	if c.writing && !ls.lflush {
		// A goroutine is writing inline on the socket; it hands back
		// (workFinish) when done.
		c.mu.Unlock()
		return
	}
	if ls.flushEnd && !c.wfailed && (ls.wpos < len(ls.wq) || len(c.q) > 0 || len(c.ctl) > 0) {
		if !c.writing {
			c.writing, ls.lflush = true, true
			c.mu.Unlock()
			ls.flush()
			return
		}
		c.mu.Unlock()
		return // the loop's write is under way; it finishes
	}
	fd := ls.fd
	ls.fd = -1
	c.writing, ls.lflush = false, false
	c.dropAllLocked()
	c.mu.Unlock()
	ls.finished = true
	ls.unplace()
	ls.dropWritten()
	ls.wq, ls.wpos, ls.woff, ls.wend = nil, 0, 0, 0
	ls.l.Stop(&ls.writeT)
	if ls.slot >= 0 {
		// Registered, even if for no event any more (an ended
		// connection waits for nothing but errors): the loop's table
		// must let go of it.
		ls.l.Remove(fd, ls.slot)
		ls.slot = -1
	}
	if ls.tls != nil {
		ls.tlsFinish(fd)
	}
	unix.Close(fd)
	c.hangUp() // connection accounting of a wrapping listener
	c.markDone()
	go ls.h.(Ender).Ended(c.Info())
}

// inlineWrite is one non-blocking write of frame on the loop's socket, from
// the goroutine that holds the writer role (so the socket stays open).
// EAGAIN is no error: nothing was written, the frame goes to the loop.
func (ls *loopConn) inlineWrite(frame []byte) (int, error) {
	n, err := evloop.Write(ls.fd, frame)
	switch err {
	case unix.EAGAIN:
		return 0, nil
	case nil:
		return n, nil
	default:
		return 0, err
	}
}

// buffered reports whether input follows the message being handled.
// Under TLS the input handed to the frame reader is one record's
// plaintext; more records may wait in the sock.
func (ls *loopConn) buffered() bool {
	return ls.rest > 0 || (ls.tls != nil && len(ls.tls.in) > 0)
}

// canInlineLocked: the socket is attached and open, and not TLS (a TLS
// connection is written by its loop only). Conn.mu held.
func (ls *loopConn) canInlineLocked() bool { return ls.fd >= 0 && ls.tls == nil }

// abort asks the loop to close the socket at once. Conn.mu held.
func (ls *loopConn) abortLocked() {
	ls.work |= workAbort
	ls.l.Post(ls)
}

// writerDoneLocked is called, Conn.mu held, when an inline writer gives
// the writer role up: a teardown that waited for it can finish now.
func (ls *loopConn) writerDoneLocked() {
	if ls.c.state == stClosed {
		ls.work |= workFinish
		ls.l.Post(ls)
	}
}
