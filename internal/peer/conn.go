package peer

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
	"github.com/pyrycode/pyrycode-relay/internal/evloop"
)

// Errors returned by Send and SendWait.
var (
	ErrClosed    = errors.New("peer: connection closed")
	ErrQueueFull = errors.New("peer: send queue over budget")
	ErrCanceled  = errors.New("peer: wait canceled")
)

// Options tunes a Conn. The zero value of a field means the default given
// in its comment. Options are shared by many connections and never mutated.
type Options struct {
	MaxMessage        int           // largest message accepted; larger closes 1009 (default 256 KiB)
	Headroom          int           // bytes left free in front of every delivered payload
	Tailroom          int           // bytes left free after every delivered payload
	QueueBytes        int           // byte budget of the outbound queue (default 4 MiB)
	HeartbeatInterval time.Duration // ping period; negative disables heartbeats (default 30 s)
	HeartbeatTimeout  time.Duration // pong deadline after a ping (default 30 s)
	MessageTimeout    time.Duration // a message must arrive within this of its first byte (default 30 s)
	WriteTimeout      time.Duration // one write must finish within this (default 10 s)
	CloseWait         time.Duration // wait for the peer's close frame after ours (default 2 s)
	// CodeAllowed reports whether a close code may appear on the wire; a close
	// frame from the peer with another code is a protocol error. Required.
	CodeAllowed func(int) bool
	// QueueGauge, when set, is kept equal to the sum of the queued data
	// bytes of every connection sharing it.
	QueueGauge *atomic.Int64
	// StampReads records each message's arrival time in its Buf.Stamp.
	StampReads bool
	// OnWritten, when set, is called by the writer for every data frame
	// written whose buffer carries a Stamp, with the time of the write
	// (unix nanoseconds, read once per write, not per frame).
	OnWritten func(stamp, now int64)
	// Loops, when set, serves TCP connections on these event loops
	// (Start) instead of a reader goroutine each: plain ones, and TLS ones
	// accepted through NewTLSListener; other connections keep their
	// goroutine. See loop_linux.go and tlsloop_linux.go.
	Loops *evloop.Group
	// ReadSize is the most an event loop reads from this connection's
	// socket at once (default 64 KiB, at most evloop.BufSize). More frames
	// per read mean more frames per write to each destination; a
	// connection whose handler can park it (a phone waiting for its
	// binary's queue) keeps what is left of a read, so it should keep
	// the default.
	ReadSize int
	// Reasons used when the connection closes itself. ReasonInvalidUTF8
	// answers a close frame whose reason is not valid UTF-8 (1007).
	ReasonProtocol, ReasonTooBig, ReasonHeartbeat, ReasonMessageTimeout, ReasonInvalidUTF8 Close
}

// Close is a close code with its reason text.
type Close struct {
	Code   int
	Reason string
}

// WithDefaults returns a copy of o with zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.MaxMessage == 0 {
		o.MaxMessage = 256 << 10
	}
	if o.QueueBytes == 0 {
		o.QueueBytes = 4 << 20
	}
	if o.ReadSize <= 0 {
		o.ReadSize = 64 << 10
	}
	o.ReadSize = min(o.ReadSize, evloop.BufSize)
	def(&o.HeartbeatInterval, 30*time.Second)
	def(&o.HeartbeatTimeout, 30*time.Second)
	def(&o.MessageTimeout, 30*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.CloseWait, 2*time.Second)
	return o
}

// Ender is a Handler told how its connection ended (Start with no onEnd).
type Ender interface {
	Ended(CloseInfo)
}

// endFunc makes a Handler and an end callback an Ender.
type endFunc struct {
	Handler
	f func(CloseInfo)
}

func (e *endFunc) Ended(ci CloseInfo) { e.f(ci) }

// Handler receives a connection's data messages on its reader goroutine.
type Handler interface {
	// HandleMessage is called for each complete data message while the
	// connection is open. It owns buf from then on: it must release it or
	// hand it to exactly one queue. payload is buf.B[Headroom:][:n].
	HandleMessage(c *Conn, op Opcode, buf *bufpool.Buf, payload []byte)
}

// CloseInfo says how a connection ended.
type CloseInfo struct {
	Code    int  // the close code sent or received; 1001 when the peer went away without one
	ByPeer  bool // the peer closed (close frame, hang-up or reset) rather than the relay
	Dropped bool // no close handshake: the peer vanished or a write failed
}

type connState uint8

const (
	stOpen    connState = iota // data flows both ways
	stClosing                  // a close frame is queued or sent; no more data out
	stClosed                   // the reader has finished; the socket is (being) closed
)

// item is one outbound frame. buf, when set, is released after the write.
type item struct {
	op   Opcode
	data []byte
	buf  *bufpool.Buf
	cost int // bytes charged to the queue budget while queued
}

// itemOverhead is charged per queued frame on top of its buffer, for the
// queue entry itself, so that a flood of tiny frames cannot hold far more
// memory than the budget says.
const itemOverhead = 64

// costOf is what a data frame holds while queued: its whole buffer (a
// small frame may sit in a larger pooled buffer, or be a slice of a larger
// envelope), not just its length.
func costOf(buf *bufpool.Buf, data []byte) int {
	if buf != nil {
		return cap(buf.B) + itemOverhead
	}
	return len(data) + itemOverhead
}

// Conn is one WebSocket connection. Run must be called exactly once, by the
// goroutine that owns the connection; every other method is safe for
// concurrent use.
type Conn struct {
	nc  net.Conn
	opt *Options

	// State only a connection with a reader goroutine has (nil on an
	// event loop, which keeps its own in loopConn): about 230 bytes an
	// idle connection on a loop does not carry.
	*goConn

	closing atomic.Bool // our close frame went out: read deadline belongs to the close wait

	pongSeen   atomic.Bool // a pong arrived since the timer last looked
	nextPing   int64       // heartbeat tick only: when the next ping is due (evloop.Now)
	unanswered int64       // heartbeat tick only: when the oldest ping with no pong since went out; 0 if none

	// done is closed when the connection has finished. A connection on a
	// loop makes it only when asked (Done, a waiting SendWait): most never
	// are, and a channel is 96 bytes an idle connection would hold.
	done chan struct{}

	mu      sync.Mutex
	q       []item // outbound frames in order
	ctl     []item // pings and pongs, written ahead of q; at most one of each waits
	queued  int    // bytes charged for data in q and in the batch being written
	writing bool   // a writer goroutine is running
	wfailed bool   // a write failed: drop everything else
	// finished: done is closed, or will be as soon as it is made.
	finished bool
	state    connState
	info     CloseInfo
	infoSet  bool
	spaceCh  chan struct{} // closed when queued drops below budget
	closeCh  chan struct{} // closed when the state leaves stOpen; made on demand
	probe    chan struct{} // closed by the next pong; made by Probe, shared by concurrent ones

	// Event-loop mode (nil ls: a reader goroutine, Run).
	ls *loopConn
}

// goConn is the goroutine path's part of a Conn: the socket and its raw
// callbacks for reads and inline writes, the bytes read with the
// handshake, the reader's buffered input and socket deadlines, the runtime
// timer of the heartbeat, and the writer goroutine's spare batch and exit
// signal.
type goConn struct {
	tcp        *net.TCPConn          // set when vectored writes are available
	wexit      chan struct{}         // (Conn.mu) closed by the writer when it exits, if set
	pend       []byte                // bytes read with the handshake, consumed first
	raw        syscall.RawConn       // the socket, for raw reads and inline writes; nil if not TCP
	chunk      *bufpool.Buf          // buffered input; nil while idle
	r, w       int                   // unread input is chunk.B[r:w]
	deadline   bool                  // a message deadline is set on the socket
	msgTimed   bool                  // ... and it was set for the message now arriving
	peek       [32]byte              // idle reads land here so idle costs no buffer (non-TCP)
	rawRead    func(fd uintptr) bool // reads into a chunk taken only once data is there
	rawWriteFn func(fd uintptr)      // one non-blocking write of wbuf (inline writes)
	wbuf       []byte                // inline write: bytes to write; owned by whoever set writing
	wn         int
	werr       error
	rawN       int
	rawErr     error
	hb         *time.Timer
	spare      []item // the writer's emptied batch, reused
}

// New wraps nc, an upgraded connection; pending holds bytes the client sent
// after its handshake. opt must have gone through WithDefaults.
func New(nc net.Conn, pending []byte, opt *Options) *Conn {
	c := &Conn{nc: nc, opt: opt}
	tcp := tcpOf(nc)
	var raw syscall.RawConn
	if tcp != nil {
		if r, err := tcp.SyscallConn(); err == nil {
			raw = r
			if opt.Loops != nil {
				c.ls = newLoopConn(c)
			}
		}
	}
	if tc, ok := nc.(*tls.Conn); ok && opt.Loops != nil {
		c.ls = newTLSLoopConn(c, tc) // nil: a reader goroutine
	}
	switch {
	case c.ls == nil:
		c.goConn = &goConn{pend: pending, raw: raw, tcp: tcp}
		if raw != nil {
			c.rawRead = c.readReady
			c.rawWriteFn = c.writeOnce
		}
		c.done = make(chan struct{}) // read without the lock by the heartbeat
	case len(pending) > 0:
		c.ls.save(pending) // handled first, as a parked connection's input is
	}
	return c
}

// tcpOf returns the socket under nc, or nil. A listener wrapper
// (connection accounting) hides it; it still hands it over for writev and
// raw reads, while Close and deadlines keep going through the wrapper.
func tcpOf(nc net.Conn) *net.TCPConn {
	if u, ok := nc.(interface{ TCPConn() *net.TCPConn }); ok {
		return u.TCPConn()
	}
	tcp, _ := nc.(*net.TCPConn)
	return tcp
}

// doneLocked returns done, made on first use. Conn.mu must be held.
func (c *Conn) doneLocked() chan struct{} {
	if c.done == nil {
		c.done = make(chan struct{})
		if c.finished {
			close(c.done)
		}
	}
	return c.done
}

// markDone closes done (or has it made closed): the connection has
// finished.
func (c *Conn) markDone() {
	c.mu.Lock()
	c.finished = true
	if c.done != nil {
		close(c.done)
	}
	c.mu.Unlock()
}

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Done is closed when the connection has finished.
func (c *Conn) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.doneLocked()
}

// Info returns how the connection ended; it is final once Done is closed.
func (c *Conn) Info() CloseInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// Closing returns a channel that is closed once the connection stops
// accepting outbound data (a close has begun).
func (c *Conn) Closing() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeCh == nil {
		c.closeCh = make(chan struct{})
		if c.state != stOpen {
			close(c.closeCh)
		}
	}
	return c.closeCh
}

// leaveOpenLocked moves an open connection to closing.
func (c *Conn) leaveOpenLocked() {
	if c.state != stOpen {
		return
	}
	c.state = stClosing
	if c.closeCh != nil {
		close(c.closeCh)
	}
}

// Open reports whether the connection still accepts outbound data.
func (c *Conn) Open() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stOpen
}

// Run reads the connection until it ends, delivering data messages to h,
// then closes the socket and releases everything the connection holds. It
// returns how the connection ended.
//
// A connection made for an event loop is served there (see Start) while
// Run waits for it to end.
func (c *Conn) Run(h Handler) CloseInfo {
	if c.ls != nil {
		ch := make(chan CloseInfo, 1)
		c.Start(h, func(ci CloseInfo) { ch <- ci })
		return <-ch
	}
	c.startHeartbeat()
	end := c.readLoop(h)
	flush := end.flush
	if end.discard {
		flush = c.discard(end.skip)
	}
	c.teardown(flush)
	return c.Info()
}

// Close starts closing with cl unless a close has already begun. With
// afterQueue the close frame follows every frame queued so far; otherwise
// queued frames are dropped and the close frame goes out next. It reports
// whether this call decided how the connection closes.
func (c *Conn) Close(cl Close, afterQueue bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stOpen {
		return false
	}
	c.setInfoLocked(CloseInfo{Code: cl.Code})
	c.leaveOpenLocked()
	if !afterQueue {
		c.dropDataLocked()
	}
	c.pushLocked(item{op: OpClose, data: closePayload(cl.Code, cl.Reason)})
	c.wakeSpaceLocked()
	return true
}

// Abort closes the socket at once without a close handshake, recording cl
// as the reason unless one was recorded before.
func (c *Conn) Abort(cl Close) {
	c.mu.Lock()
	c.setInfoLocked(CloseInfo{Code: cl.Code, Dropped: true})
	c.leaveOpenLocked()
	if c.ls != nil {
		c.ls.abortLocked()
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.hangUp()
}

// Send queues a text message without blocking. It fails with ErrQueueFull,
// queueing nothing, when the message would take the queue over its budget.
// On success the Conn owns buf (which may be nil); on failure the caller does.
// With now, a message that finds nothing queued is written at once on the
// caller's goroutine (see enqueueUnlock); callers pass it for the last
// message of a burst, so that messages arriving together are still written
// together by the writer.
func (c *Conn) Send(buf *bufpool.Buf, data []byte, now bool) error {
	c.mu.Lock()
	if c.state != stOpen {
		c.mu.Unlock()
		return ErrClosed
	}
	cost := costOf(buf, data)
	if c.queued+cost > c.opt.QueueBytes {
		c.mu.Unlock()
		return ErrQueueFull
	}
	c.addQueuedLocked(cost)
	c.enqueueUnlock(item{op: OpText, data: data, buf: buf, cost: cost}, now)
	return nil
}

// SendWait queues a text message, first waiting while the queue is at or
// over its budget (back-pressure: the message is never dropped while the
// connection is open). It returns ErrCanceled when cancel is closed first.
// Ownership of buf and now are as for Send.
func (c *Conn) SendWait(buf *bufpool.Buf, data []byte, cancel <-chan struct{}, now bool) error {
	for {
		c.mu.Lock()
		if c.state != stOpen {
			c.mu.Unlock()
			return ErrClosed
		}
		if c.queued < c.opt.QueueBytes {
			cost := costOf(buf, data)
			c.addQueuedLocked(cost)
			c.enqueueUnlock(item{op: OpText, data: data, buf: buf, cost: cost}, now)
			return nil
		}
		if c.spaceCh == nil {
			c.spaceCh = make(chan struct{})
		}
		ch, done := c.spaceCh, c.doneLocked()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-cancel:
			return ErrCanceled
		case <-done:
			return ErrClosed
		}
	}
}

// TrySend queues a text message as SendWait does, but never waits: it
// fails with ErrQueueFull, queueing nothing, where SendWait would wait (the
// queue at or over its budget). Ownership of buf and now are as for Send.
func (c *Conn) TrySend(buf *bufpool.Buf, data []byte, now bool) error {
	c.mu.Lock()
	if c.state != stOpen {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.queued >= c.opt.QueueBytes {
		c.mu.Unlock()
		return ErrQueueFull
	}
	cost := costOf(buf, data)
	c.addQueuedLocked(cost)
	c.enqueueUnlock(item{op: OpText, data: data, buf: buf, cost: cost}, now)
	return nil
}

// Probe pings the peer and reports whether a pong arrives within timeout.
// It reports false as soon as the connection begins to close.
func (c *Conn) Probe(timeout time.Duration) bool {
	c.mu.Lock()
	if c.state != stOpen {
		c.mu.Unlock()
		return false
	}
	if c.closeCh == nil {
		c.closeCh = make(chan struct{})
	}
	closing := c.closeCh
	if c.probe == nil {
		c.probe = make(chan struct{})
	}
	ch := c.probe
	c.controlLocked(OpPing, nil)
	c.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-closing:
		select {
		case <-ch: // the pong came before the close
			return true
		default:
			return false
		}
	case <-t.C:
		return false
	}
}

// HoldWrites keeps the connection from writing anything until
// ReleaseWrites, while messages may already be queued: the opening
// handshake's 101 response must go out first. Call it before the Conn is
// shared.
func (c *Conn) HoldWrites() {
	c.mu.Lock()
	c.writing = true // as if a writer ran: nobody starts one
	c.mu.Unlock()
}

// ReleaseWrites ends HoldWrites and starts a writer for whatever was queued
// meanwhile.
func (c *Conn) ReleaseWrites() {
	c.mu.Lock()
	c.writing = false
	if len(c.q) > 0 || len(c.ctl) > 0 {
		c.writing = true
		startWriter(c)
	}
	c.mu.Unlock()
}

// Buffered reports whether more input is already buffered after the
// message being handled: more messages are coming at once. Only the
// connection's handler (on its reader goroutine) may call it.
func (c *Conn) Buffered() bool {
	if c.ls != nil {
		return c.ls.buffered()
	}
	return c.r < c.w
}

// Options returns the options the connection was made with.
func (c *Conn) Options() *Options { return c.opt }

// QueuedBytes returns the data bytes waiting to be written.
func (c *Conn) QueuedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued
}

func (c *Conn) addQueuedLocked(n int) {
	c.queued += n
	if g := c.opt.QueueGauge; g != nil {
		g.Add(int64(n))
	}
}

func (c *Conn) setInfoLocked(ci CloseInfo) {
	if !c.infoSet {
		c.info, c.infoSet = ci, true
	}
}

// pushLocked appends it to the queue and makes sure a writer runs.
func (c *Conn) pushLocked(it item) {
	c.q = append(c.q, it)
	c.wakeWriterLocked()
}

func (c *Conn) wakeWriterLocked() {
	if !c.writing {
		c.writing = true
		startWriter(c)
	}
}

// dropDataLocked releases every queued data frame that is not yet being
// written; control frames stay.
func (c *Conn) dropDataLocked() {
	kept := c.q[:0]
	for _, it := range c.q {
		if it.op == OpText {
			c.addQueuedLocked(-it.cost)
			it.buf.Release()
			continue
		}
		// A partly written frame (opRaw) stays: dropping it would corrupt
		// the stream before the close frame.
		kept = append(kept, it)
	}
	clear(c.q[len(kept):])
	c.q = kept
}

// dropAllLocked releases every queued frame, control frames included.
func (c *Conn) dropAllLocked() {
	for _, it := range c.q {
		c.addQueuedLocked(-it.cost) // 0 for control frames
		it.buf.Release()
	}
	clear(c.q)
	c.q = c.q[:0]
	c.ctl = nil
}

func (c *Conn) wakeSpaceLocked() {
	if c.spaceCh != nil {
		close(c.spaceCh)
		c.spaceCh = nil
	}
}

// teardown runs once when the reader has finished. With flush, a close frame
// still queued (our answer to the peer's close) is written before the socket
// is closed; otherwise the socket is closed at once.
func (c *Conn) teardown(flush bool) {
	c.stopHeartbeat()
	c.mu.Lock()
	c.setInfoLocked(CloseInfo{Code: 1001, ByPeer: true, Dropped: true})
	c.leaveOpenLocked()
	c.state = stClosed
	c.dropDataLocked()
	if !flush {
		c.dropAllLocked()
	}
	var wait chan struct{}
	if c.writing {
		c.wexit = make(chan struct{})
		wait = c.wexit
	}
	c.wakeSpaceLocked()
	c.probe = nil
	c.mu.Unlock()
	if !flush {
		c.hangUp()
	}
	if wait != nil {
		<-wait
	}
	c.nc.Close()
	if c.chunk != nil {
		c.chunk.Release()
		c.chunk = nil
	}
	c.markDone()
}
