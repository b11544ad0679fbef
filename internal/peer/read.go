package peer

import (
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
)

// chunkSize is the input buffer taken while bytes are arriving. Payloads
// larger than what it holds are read straight into their message buffer.
const chunkSize = 4096

// readEnd says how the read loop ended.
type readEnd struct {
	// flush: the peer's close frame has arrived; whatever close frame is
	// queued must be written before the socket is closed.
	flush bool
	// discard: the relay failed the connection; the input that follows is
	// to be discarded until the peer's close frame (see discard).
	discard bool
	// skip, with discard: how many bytes of input, from the unread
	// buffered input on, still belong to the frame being read; -1 when the
	// stream can no longer be parsed.
	skip int64
}

// readLoop parses frames until the connection ends, and says how it ended.
// A message being assembled is released before it returns.
func (c *Conn) readLoop(h Handler) readEnd {
	if len(c.pend) > 0 {
		c.chunk = bufpool.Get(max(chunkSize, len(c.pend)))
		c.w = copy(c.chunk.B, c.pend)
		c.pend = nil
	}
	var (
		msg      *bufpool.Buf // message being assembled
		msgOp    Opcode
		msgLen   int
		inMsg    bool
		headroom = c.opt.Headroom
		room     = c.opt.Headroom + c.opt.Tailroom
	)
	defer func() { msg.Release() }()
	for {
		hd, err := parseHeader(c.avail())
		for err == errNeedMore {
			if err = c.fill(inMsg || c.r < c.w); err != nil {
				return c.readFailed(err, 0)
			}
			hd, err = parseHeader(c.avail())
		}
		if err != nil {
			return c.fail(c.opt.ReasonProtocol, -1)
		}
		c.r += hd.size

		if hd.op.isControl() {
			n := int(hd.length)
			for c.w-c.r < n {
				if err := c.fill(true); err != nil {
					return c.readFailed(err, int64(n))
				}
			}
			// Control payloads are rare and small: a fresh slice keeps 125
			// bytes off the reader's stack, which an idle connection keeps.
			var p []byte
			if n > 0 {
				p = make([]byte, n)
				unmaskCopy(p, c.chunk.B[c.r:c.r+n], hd.mask, 0)
			}
			c.consume(n)
			switch hd.op {
			case OpPing:
				c.sendControl(OpPong, p)
			case OpPong:
				c.gotPong()
			case OpClose:
				code, err := parseClosePayload(p, c.opt.CodeAllowed)
				switch {
				case err == errBadCloseText:
					return c.rejectClose(c.opt.ReasonInvalidUTF8)
				case err != nil:
					return c.rejectClose(c.opt.ReasonProtocol)
				}
				return readEnd{flush: c.peerClosed(code)}
			}
			if !inMsg {
				c.messageDone()
			}
			continue
		}

		// Data frame.
		switch {
		case hd.op == OpContinuation && !inMsg, hd.op != OpContinuation && inMsg:
			return c.fail(c.opt.ReasonProtocol, hd.length)
		case hd.op != OpContinuation:
			inMsg, msgOp, msgLen = true, hd.op, 0
		}
		if hd.length > int64(c.opt.MaxMessage-msgLen) {
			return c.fail(c.opt.ReasonTooBig, hd.length)
		}
		n := int(hd.length)
		if msg == nil {
			msg = bufpool.Get(room + n)
		} else {
			msg = bufpool.Grow(msg, headroom+msgLen, room+msgLen+n)
		}
		dst := msg.B[headroom+msgLen : headroom+msgLen+n]
		// Bytes already buffered, then the rest straight from the socket.
		got := min(n, c.w-c.r)
		if got > 0 {
			unmaskCopy(dst[:got], c.chunk.B[c.r:c.r+got], hd.mask, 0)
			c.consume(got)
		}
		for got < n {
			k, err := c.readDirect(dst[got:])
			if k > 0 {
				unmaskCopy(dst[got:got+k], dst[got:got+k], hd.mask, got)
				got += k
			}
			if err != nil {
				return c.readFailed(err, int64(n-got))
			}
		}
		msgLen += n
		if !hd.fin {
			continue
		}
		inMsg = false
		c.messageDone()
		if c.Open() {
			m := msg
			msg = nil
			if c.opt.StampReads {
				m.Stamp = time.Now().UnixNano()
			}
			h.HandleMessage(c, msgOp, m, m.B[headroom:headroom+msgLen])
		}
	}
}

// avail returns the buffered, unparsed input.
func (c *Conn) avail() []byte {
	if c.chunk == nil {
		return nil
	}
	return c.chunk.B[c.r:c.w]
}

// consume marks n buffered bytes as used and gives the chunk back to the pool
// once it is empty, so an idle connection holds no input buffer.
func (c *Conn) consume(n int) {
	c.r += n
	if c.r == c.w {
		c.chunk.Release()
		c.chunk, c.r, c.w = nil, 0, 0
	}
}

// fill reads more input into the chunk. midMessage says a message has begun,
// so its completion deadline applies; otherwise the read may wait forever
// (liveness is the heartbeat's job) and any old deadline is cleared.
func (c *Conn) fill(midMessage bool) error {
	c.armDeadline(midMessage)
	if c.chunk != nil && c.r == c.w {
		// Drained: wait without holding a buffer.
		c.chunk.Release()
		c.chunk, c.r, c.w = nil, 0, 0
	}
	if c.chunk == nil && c.raw != nil {
		return c.fillRaw()
	}
	if c.chunk == nil {
		n, err := c.nc.Read(c.peek[:])
		if n > 0 {
			c.chunk = bufpool.Get(chunkSize)
			c.r, c.w = 0, copy(c.chunk.B, c.peek[:n])
			return nil
		}
		return err
	}
	if c.r > 0 {
		c.w = copy(c.chunk.B, c.chunk.B[c.r:c.w])
		c.r = 0
	}
	n, err := c.nc.Read(c.chunk.B[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	return err
}

// fillRaw waits for input on a TCP socket holding no buffer, then reads
// whatever has arrived into a fresh chunk with one system call.
func (c *Conn) fillRaw() error {
	c.rawN, c.rawErr = 0, nil
	if err := c.raw.Read(c.rawRead); err != nil {
		return err
	}
	if c.rawErr != nil {
		return c.rawErr
	}
	if c.rawN == 0 {
		return io.EOF
	}
	c.r, c.w = 0, c.rawN
	return nil
}

// readReady is the RawConn callback of fillRaw. It reports false (wait for
// readiness) when nothing is there, giving the chunk back meanwhile.
func (c *Conn) readReady(fd uintptr) bool {
	if c.chunk == nil {
		c.chunk = bufpool.Get(chunkSize)
	}
	for {
		n, err := syscall.Read(int(fd), c.chunk.B[:chunkSize])
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			c.chunk.Release()
			c.chunk = nil
			return false
		case nil:
			c.rawN = n
		default:
			c.rawErr = err
		}
		if n <= 0 {
			c.chunk.Release()
			c.chunk = nil
		}
		return true
	}
}

// readDirect reads payload bytes straight into p (the chunk is empty).
func (c *Conn) readDirect(p []byte) (int, error) {
	c.armDeadline(true)
	return c.nc.Read(p)
}

// armDeadline sets or clears the message-completion read deadline. The
// deadline is set when the reader first has to wait for more of a message,
// and it is set afresh for every message: time the reader spent in the
// handler (for example waiting on a slow binary) is not charged to the
// peer. Once our close frame is out the deadline belongs to the close wait
// and is left alone.
func (c *Conn) armDeadline(midMessage bool) {
	if c.closing.Load() {
		return
	}
	var t time.Time
	switch {
	case midMessage && c.msgTimed, !midMessage && !c.deadline:
		return
	case midMessage:
		t = time.Now().Add(c.opt.MessageTimeout)
	}
	_ = c.nc.SetReadDeadline(t)
	c.deadline, c.msgTimed = midMessage, midMessage
	if c.closing.Load() { // the writer set the close wait meanwhile: keep it
		_ = c.nc.SetReadDeadline(time.Now().Add(c.opt.CloseWait))
	}
}

// messageDone marks the end of a message: the next one gets its own deadline.
func (c *Conn) messageDone() { c.msgTimed = false }

// readFailed ends the read loop after a read error. skip is as for fail.
func (c *Conn) readFailed(err error, skip int64) readEnd {
	if errors.Is(err, os.ErrDeadlineExceeded) && !c.closing.Load() && c.Open() {
		// A message did not finish arriving in time.
		return c.fail(c.opt.ReasonMessageTimeout, skip)
	}
	return readEnd{}
}

// fail closes with cl after a read-side violation (unless a close is
// already under way) and ends the read loop; the input that follows is then
// discarded until the peer answers with its close frame. skip is how many
// bytes of input, from the unread buffered input on, still belong to the
// frame being read, or -1 when the stream can no longer be parsed.
func (c *Conn) fail(cl Close, skip int64) readEnd {
	c.Close(cl, false)
	if !c.closing.Load() {
		// The close wait bounds the discard from now on; the writer sets
		// it afresh once our close frame is out.
		_ = c.nc.SetReadDeadline(time.Now().Add(c.opt.CloseWait))
	}
	return readEnd{discard: true, skip: skip}
}

// rejectClose answers a malformed close frame from the peer with cl
// (unless a close is already under way). The peer's close frame has
// arrived all the same, so once ours is written the handshake is over.
func (c *Conn) rejectClose(cl Close) readEnd {
	c.Close(cl, false)
	return readEnd{flush: true}
}

// discard reads and drops the input that follows a failure, holding one
// chunk and never a payload. It still parses frame headers, skipping their
// payloads, so that it recognises the peer's close frame: RFC 6455 §7.1.1
// has the server close the TCP connection once both close frames have
// passed, so it then reports true (flush: the socket is closed as soon as
// our close frame is out). It reports false when the peer hangs up or the
// read deadline (the close wait) passes first. skip is as for fail; once
// the stream cannot be parsed (skip < 0, or a header that does not parse)
// everything is dropped until then.
func (c *Conn) discard(skip int64) bool {
	if c.chunk == nil {
		c.chunk = bufpool.Get(chunkSize)
		c.r, c.w = 0, 0
	}
	for {
		if skip != 0 {
			n := c.w - c.r
			if skip > 0 && int64(n) > skip {
				n = int(skip)
			}
			c.r += n
			if skip > 0 {
				skip -= int64(n)
			}
			if skip != 0 {
				if c.discardRead() != nil {
					return false
				}
				continue
			}
		}
		hd, err := parseHeader(c.avail())
		switch {
		case err == errNeedMore:
			if c.discardRead() != nil {
				return false
			}
			continue
		case err != nil:
			skip = -1
			continue
		}
		c.r += hd.size
		skip = hd.length
		if hd.op == OpClose {
			// Read its payload (at most 125 bytes) too: closing a socket
			// with unread input would reset the connection, and the peer
			// could lose our close frame.
			for int64(c.w-c.r) < skip {
				if c.discardRead() != nil {
					return false
				}
			}
			c.r += int(skip)
			return true
		}
	}
}

// discardRead reads more input into the chunk after its unread bytes,
// which it first moves to the front. It leaves the read deadline alone.
func (c *Conn) discardRead() error {
	if c.r > 0 {
		c.w = copy(c.chunk.B, c.chunk.B[c.r:c.w])
		c.r = 0
	}
	for {
		n, err := c.nc.Read(c.chunk.B[c.w:])
		c.w += n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// peerClosed handles the peer's close frame: answer it (unless it answers
// ours) and end the connection once the answer is written.
func (c *Conn) peerClosed(code int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stOpen {
		// It answers our close frame (done), or crossed it: then write
		// ours before hanging up if it has not gone out yet.
		return c.state == stClosing && !c.closing.Load()
	}
	var payload []byte
	info := CloseInfo{Code: code, ByPeer: true}
	if code != 0 {
		payload = closePayload(code, "")
	} else {
		info.Code = 1001
	}
	c.setInfoLocked(info)
	c.leaveOpenLocked()
	c.dropDataLocked()
	c.pushLocked(item{op: OpClose, data: payload})
	c.wakeSpaceLocked()
	return true
}
