package peer

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// maxBatch bounds the frames flushed by one vectored write, and writeChunk
// its bytes (a single larger frame goes alone).
const (
	maxBatch   = 64
	writeChunk = 256 << 10
)

// batch is the writer's scratch space: frame headers and the iovec list.
type batch struct {
	hdr  [maxBatch * 10]byte
	vec  [2 * maxBatch][]byte
	bufs net.Buffers // points into vec; a field so WriteTo does not allocate
	buf  []byte      // coalescing buffer for connections without writev (TLS)
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

// Writer goroutines are pooled: a connection with something to write hands
// itself to an idle writer, so a burst costs a channel hand-off instead of a
// goroutine start (which allocates). Writers idle for writerIdle exit, so an
// idle relay holds no writer goroutines and the pool follows the load.
var idleWriters = make(chan *Conn)

const writerIdle = 5 * time.Second

func startWriter(c *Conn) {
	if c.ls != nil {
		c.ls.requestFlush() // the event loop writes
		return
	}
	select {
	case idleWriters <- c:
	default:
		go writerWorker(c)
	}
}

func writerWorker(c *Conn) {
	var idle *time.Timer
	for {
		c.writeLoop()
		if idle == nil {
			idle = time.NewTimer(writerIdle)
		} else {
			idle.Reset(writerIdle)
		}
		select {
		case c = <-idleWriters:
			idle.Stop()
		case <-idle.C:
			return
		}
	}
}

// inlinePartial counts inline writes the socket took only in part (tests).
var inlinePartial atomic.Int64

// opRaw marks an item whose data is already framed: the rest of a frame
// an inline write could not finish. It never reaches the wire as an opcode.
const opRaw Opcode = 0xFF

// enqueueUnlock queues a data frame and releases c.mu. When nothing is
// queued or being written, the frame is written at once on the caller's
// goroutine with one non-blocking system call, saving the hand-off to a
// writer goroutine (and the thread wake-ups it costs) on the common path
// of one frame at a time. Whatever the socket does not take at once goes to
// the head of the queue for a writer. Called with c.mu held.
func (c *Conn) enqueueUnlock(it item, now bool) {
	var frame []byte
	if now {
		frame = c.inlineFrame(it)
	}
	if frame == nil {
		c.pushLocked(it)
		c.mu.Unlock()
		return
	}
	c.writing = true // this goroutine is the writer until it settles below
	c.mu.Unlock()

	// Control, not Write: RawConn.Write first checks the write deadline,
	// which is whatever the writer goroutine last set for its own write
	// (a ping, a pong, an earlier batch) and long past for a connection
	// that has been idle. This write needs no deadline of its own: it is
	// one non-blocking system call that never waits (EAGAIN leaves the
	// frame to a writer, which sets a fresh deadline for every write).
	var n int
	var err error
	if c.ls != nil {
		n, err = c.ls.inlineWrite(frame) // the loop's descriptor stays open while we write
	} else {
		c.wbuf, c.wn, c.werr = frame, 0, nil
		if cerr := c.raw.Control(c.rawWriteFn); cerr != nil && c.werr == nil {
			c.werr = cerr
		}
		n, err = c.wn, c.werr
		c.wbuf = nil
	}

	c.mu.Lock()
	switch {
	case err != nil:
		c.wfailed = true
		c.dropDataLocked()
		c.setInfoLocked(CloseInfo{Code: 1001, ByPeer: true, Dropped: true})
		c.leaveOpenLocked()
		c.addQueuedLocked(-it.cost)
		it.buf.Release()
	case n == len(frame):
		if c.opt.OnWritten != nil && it.buf != nil && it.buf.Stamp != 0 {
			c.opt.OnWritten(it.buf.Stamp, time.Now().UnixNano())
		}
		c.addQueuedLocked(-it.cost)
		it.buf.Release()
		if c.queued < c.opt.QueueBytes {
			c.wakeSpaceLocked()
		}
	default: // the rest goes first, through a writer
		inlinePartial.Add(1)
		it.op, it.data = opRaw, frame[n:]
		c.q = append(c.q, item{})
		copy(c.q[1:], c.q)
		c.q[0] = it
	}
	if len(c.q) > 0 || len(c.ctl) > 0 {
		startWriter(c) // c.writing stays true: the writer takes over
	} else {
		c.writing = false
		if c.goConn != nil && c.wexit != nil {
			close(c.wexit)
			c.wexit = nil
		}
		if c.ls != nil {
			c.ls.writerDoneLocked()
		}
	}
	if err != nil && c.ls != nil {
		c.ls.abortLocked() // the loop tears the connection down
		err = nil
	}
	c.mu.Unlock()
	if err != nil {
		c.hangUp() // wakes the reader, which tears the connection down
	}
}

// inlineFrame returns the whole frame (header and payload, contiguous) when
// it can be written inline: a TCP socket, nothing queued or being written,
// and at least a header's worth of room in the buffer just before the
// payload, where the header is then written (the bytes there, an envelope's
// prefix, are no longer needed). Otherwise it returns nil.
func (c *Conn) inlineFrame(it item) []byte {
	if !c.canInlineLocked() || c.writing || len(c.q) > 0 || len(c.ctl) > 0 || it.buf == nil || len(it.data) == 0 {
		return nil
	}
	b := it.buf.B
	// Where the payload starts, if it lies in b. Computed from the
	// addresses, not the capacities: a payload cut out of a message with a
	// full slice expression (the envelope parser's frame) has no spare
	// capacity, yet lies inside b all the same.
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(it.data))) - uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	hl := headerLen(len(it.data))
	if off < hl || off >= len(b) || len(it.data) > len(b)-off || &b[off] != &it.data[0] {
		return nil
	}
	putHeader(b[off-hl:], it.op, len(it.data))
	return b[off-hl : off+len(it.data)]
}

// canInlineLocked reports whether the socket can be written inline.
func (c *Conn) canInlineLocked() bool {
	if c.ls != nil {
		return c.ls.canInlineLocked()
	}
	return c.raw != nil
}

// writeOnce is the RawConn.Control callback of an inline write: one
// attempt, never a wait (EAGAIN leaves wn at 0 and the frame to a writer).
func (c *Conn) writeOnce(fd uintptr) {
	for {
		n, err := syscall.Write(int(fd), c.wbuf)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
		case nil:
			c.wn = n
		default:
			c.werr = err
		}
		return
	}
}

// sendControl queues a control frame (ping, pong). payload is copied.
func (c *Conn) sendControl(op Opcode, payload []byte) {
	c.mu.Lock()
	if c.state == stOpen {
		c.controlLocked(op, payload)
	}
	c.mu.Unlock()
}

// controlLocked queues a ping or pong ahead of waiting data (the relay never
// fragments, so a control frame may go between any two messages). At most
// one ping and one pong wait at a time: a newer pong replaces the payload of
// a waiting one (RFC 6455 allows answering only the latest ping), and a ping
// already waiting serves every asker. A peer flooding pings while not
// reading therefore cannot grow the queue. Control frames are not charged to
// the byte budget; they are bounded by this rule instead.
func (c *Conn) controlLocked(op Opcode, payload []byte) {
	for i := range c.ctl {
		if c.ctl[i].op == op {
			if op == OpPong {
				c.ctl[i].data = append(c.ctl[i].data[:0], payload...)
			}
			return
		}
	}
	var data []byte
	if len(payload) > 0 {
		data = append(make([]byte, 0, 125), payload...)
	}
	c.ctl = append(c.ctl, item{op: op, data: data})
	c.wakeWriterLocked()
}

// writeLoop is the connection's single writer. It runs only while frames are
// queued: it takes everything queued, writes it in as few system calls as
// possible, and exits when the queue is empty.
func (c *Conn) writeLoop() {
	b := batchPool.Get().(*batch)
	defer batchPool.Put(b)
	for {
		c.mu.Lock()
		ctl := c.ctl
		c.ctl = nil
		items := c.q
		if len(items) == 0 && len(ctl) == 0 {
			c.writing = false
			if c.wexit != nil {
				close(c.wexit)
				c.wexit = nil
			}
			c.mu.Unlock()
			return
		}
		c.q, c.spare = c.spare[:0], nil
		failed := c.wfailed
		c.mu.Unlock()

		var err error
		sentClose := false
		// The rest of a frame an inline write began must go before any
		// control frame, or the control frame would land inside it.
		head := 0
		if len(items) > 0 && items[0].op == opRaw {
			head = 1
			if !failed {
				_, err = c.writeItems(b, items[:1])
			}
		}
		if !failed && err == nil && len(ctl) > 0 {
			sentClose, err = c.writeItems(b, ctl)
		}
		if !failed && err == nil && len(items) > head {
			sentClose, err = c.writeItems(b, items[head:])
		}
		n := 0
		var now int64
		for i := range items {
			it := &items[i]
			if it.op == OpText || it.op == opRaw {
				n += it.cost
				if c.opt.OnWritten != nil && err == nil && !failed && it.buf != nil && it.buf.Stamp != 0 {
					if now == 0 {
						now = time.Now().UnixNano()
					}
					c.opt.OnWritten(it.buf.Stamp, now)
				}
			}
			it.buf.Release()
		}
		clear(items)

		c.mu.Lock()
		c.addQueuedLocked(-n)
		if cap(items) <= 256 { // keep the slice for the next burst, unless a flood grew it
			if len(c.q) == 0 {
				c.q = items[:0]
			} else {
				c.spare = items[:0]
			}
		}
		if c.queued < c.opt.QueueBytes {
			c.wakeSpaceLocked()
		}
		if err != nil {
			c.wfailed = true
			c.dropDataLocked()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.setInfoLocked(CloseInfo{Code: 1011, Dropped: true})
			} else {
				c.setInfoLocked(CloseInfo{Code: 1001, ByPeer: true, Dropped: true})
			}
			c.leaveOpenLocked()
		}
		c.mu.Unlock()
		if err != nil {
			c.hangUp() // wakes the reader, which tears the connection down
		}
		if sentClose {
			c.closing.Store(true)
			_ = c.nc.SetReadDeadline(time.Now().Add(c.opt.CloseWait))
		}
	}
}

// writeItems writes items in order and reports whether a close frame went
// out. Nothing after a close frame is written. Every system call gets its
// own write deadline and carries at most about writeChunk bytes, so "one
// write must finish within the write timeout" holds for a slow reader that
// keeps making progress through a long queue.
func (c *Conn) writeItems(b *batch, items []item) (sentClose bool, err error) {
	for len(items) > 0 && !sentClose {
		if err := c.nc.SetWriteDeadline(time.Now().Add(c.opt.WriteTimeout)); err != nil {
			return false, err
		}
		k := 0
		if c.tcp != nil {
			k, sentClose, err = c.writeVec(b, items)
		} else {
			k, sentClose, err = c.writeCoalesced(b, items)
		}
		if err != nil {
			return sentClose, err
		}
		items = items[k:]
	}
	return sentClose, nil
}

// writeVec writes up to maxBatch frames with one writev. It returns how many
// items it consumed.
func (c *Conn) writeVec(b *batch, items []item) (int, bool, error) {
	vec := b.vec[:0]
	h := b.hdr[:]
	k, closed, size := 0, false, 0
	for ; k < len(items) && k < maxBatch && !closed && (k == 0 || size+len(items[k].data) <= writeChunk); k++ {
		it := &items[k]
		size += len(it.data)
		if it.op != opRaw {
			n := putHeader(h, it.op, len(it.data))
			vec = append(vec, h[:n])
			h = h[n:]
		}
		if len(it.data) > 0 {
			vec = append(vec, it.data)
		}
		closed = it.op == OpClose
	}
	b.bufs = vec
	_, err := b.bufs.WriteTo(c.tcp)
	b.bufs = nil
	clear(b.vec[:len(vec)])
	return k, closed, err
}

// coalesceLimit bounds the copy buffer used where writev is not available.
const coalesceLimit = 32 << 10

// writeCoalesced copies frames into one buffer and writes it once, so that a
// TLS connection sends one record per burst rather than one per frame. A
// frame too large for the buffer is written on its own.
func (c *Conn) writeCoalesced(b *batch, items []item) (int, bool, error) {
	if b.buf == nil {
		b.buf = make([]byte, 0, coalesceLimit)
	}
	out := b.buf[:0]
	k, closed := 0, false
	for ; k < len(items) && !closed; k++ {
		it := &items[k]
		size := headerLen(len(it.data)) + len(it.data)
		if len(out) > 0 && len(out)+size > coalesceLimit {
			break
		}
		if it.op != opRaw {
			var hdr [10]byte
			n := putHeader(hdr[:], it.op, len(it.data))
			out = append(out, hdr[:n]...)
		}
		out = append(out, it.data...)
		closed = it.op == OpClose
	}
	_, err := c.nc.Write(out)
	if cap(out) > coalesceLimit {
		b.buf = nil // one oversized frame: do not keep its buffer
	}
	return k, closed, err
}
