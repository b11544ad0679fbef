package loadgen

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// WebSocket opcodes.
const (
	opCont  = 0x0
	opText  = 0x1
	opBin   = 0x2
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// maxMessage bounds one message read, so a misbehaving relay cannot make the
// tool allocate without limit.
const maxMessage = 64 << 20

// CloseError is a close frame received from the relay.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string { return fmt.Sprintf("closed by relay: %d %q", e.Code, e.Reason) }

// HandshakeError is an opening handshake the relay refused.
type HandshakeError struct{ Status int }

func (e *HandshakeError) Error() string { return fmt.Sprintf("handshake refused: HTTP %d", e.Status) }

// ErrProtocol reports a frame the client cannot accept.
var ErrProtocol = errors.New("websocket protocol error")

// Conn is a minimal client WebSocket connection built for load generation:
// after the handshake, reading and writing allocate nothing. Frames are
// masked with the all-zero key, which RFC 6455 allows and which makes
// masking free.
//
// One goroutine reads (ReadMessage). Out and Flush belong to one writing
// goroutine; WriteMessage may be used by another; both take wmu, so whole
// frames never interleave.
type Conn struct {
	nc net.Conn

	rbuf []byte // input; unread bytes are rbuf[r:w]
	r, w int

	frag   []byte // a fragmented message being assembled
	fragOp byte

	// Out is the pending output of the writing goroutine: append frames with
	// AppendText (or AppendHeader and the payload) and send them with Flush.
	Out []byte
	// AutoFlush makes a read flush Out before it waits for the network, for
	// a goroutine that both reads and writes: replies go out in one write
	// per burst of input, and never wait behind a blocked read.
	AutoFlush bool

	wmu     sync.Mutex
	scratch []byte // WriteMessage's and control frames' buffer, under wmu
	closed  bool   // a close frame was sent, under wmu

	pings atomic.Uint64 // pings received (and answered)
}

// DialOptions says how to open one connection.
type DialOptions struct {
	Addr      string      // host:port to connect to
	Host      string      // Host header
	Path      string      // request path, e.g. /v1/client
	Header    [][2]string // extra request headers
	LocalIP   net.IP      // source address, nil for the kernel's choice
	TLS       *tls.Config // nil for plain ws://
	Timeout   time.Duration
	ReadBuf   int // initial read buffer (grows on demand); default 16 KiB
	RecvBuf   int // SO_RCVBUF set before connecting when > 0
	KeepAlive bool
}

// Stage names where a dial failed, for error reports.
type DialError struct {
	Stage string // "connect", "tls" or "upgrade"
	Err   error
}

func (e *DialError) Error() string { return e.Stage + " failed: " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// Dial opens a WebSocket connection. It returns the connection and how long
// the TCP connect, TLS and upgrade took together.
func Dial(o *DialOptions) (*Conn, error) {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Deadline: deadline, KeepAlive: -1}
	if o.LocalIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: o.LocalIP}
	}
	if o.RecvBuf > 0 {
		rb := o.RecvBuf
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rb)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	nc, err := d.Dial("tcp", o.Addr)
	if err != nil {
		return nil, &DialError{"connect", err}
	}
	if o.TLS != nil {
		tc := tls.Client(nc, o.TLS)
		_ = tc.SetDeadline(deadline)
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return nil, &DialError{"tls", err}
		}
		nc = tc
	}
	size := o.ReadBuf
	if size <= 0 {
		size = 16 << 10
	}
	c := &Conn{nc: nc, rbuf: make([]byte, max(size, 256))}
	_ = nc.SetDeadline(deadline)
	if err := c.handshake(o); err != nil {
		nc.Close()
		return nil, &DialError{"upgrade", err}
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func (c *Conn) handshake(o *DialOptions) error {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])
	req := make([]byte, 0, 512)
	req = append(req, "GET "+o.Path+" HTTP/1.1\r\nHost: "+o.Host+
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "+key+
		"\r\nSec-WebSocket-Version: 13\r\n"...)
	for _, h := range o.Header {
		req = append(req, h[0]+": "+h[1]+"\r\n"...)
	}
	req = append(req, "\r\n"...)
	if _, err := c.nc.Write(req); err != nil {
		return err
	}
	// Read the response head into rbuf; what follows it stays there.
	end := -1
	for end < 0 {
		if c.w == len(c.rbuf) {
			if c.w >= 16<<10 {
				return fmt.Errorf("%w: response head too large", ErrProtocol)
			}
			c.rbuf = append(c.rbuf, make([]byte, len(c.rbuf))...)
		}
		n, err := c.nc.Read(c.rbuf[c.w:])
		c.w += n
		if i := bytes.Index(c.rbuf[:c.w], []byte("\r\n\r\n")); i >= 0 {
			end = i + 4
			break
		}
		if err != nil {
			return err
		}
	}
	head := c.rbuf[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	// "HTTP/1.1 101 Switching Protocols"
	f := bytes.Fields(line)
	if len(f) < 2 {
		return fmt.Errorf("%w: bad status line", ErrProtocol)
	}
	status, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return fmt.Errorf("%w: bad status line", ErrProtocol)
	}
	if status != 101 {
		return &HandshakeError{Status: status}
	}
	h := sha1.Sum([]byte(key + wsGUID))
	want := base64.StdEncoding.EncodeToString(h[:])
	ok := false
	for _, l := range bytes.Split(rest, []byte("\r\n")) {
		k, v, found := bytes.Cut(l, []byte(":"))
		if found && bytes.EqualFold(bytes.TrimSpace(k), []byte("Sec-WebSocket-Accept")) {
			ok = string(bytes.TrimSpace(v)) == want
		}
	}
	if !ok {
		return fmt.Errorf("%w: bad Sec-WebSocket-Accept", ErrProtocol)
	}
	c.r = end
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	return nil
}

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// SetReadDeadline sets the read deadline; safe from any goroutine.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// need makes at least k unread bytes available in rbuf[r:w].
func (c *Conn) need(k int) error {
	for c.w-c.r < k {
		if c.r == c.w {
			c.r, c.w = 0, 0
		}
		if len(c.rbuf)-c.r < k {
			if k > len(c.rbuf) {
				nb := make([]byte, max(k, 2*len(c.rbuf)))
				copy(nb, c.rbuf[c.r:c.w])
				c.rbuf = nb
			} else {
				copy(c.rbuf, c.rbuf[c.r:c.w])
			}
			c.w -= c.r
			c.r = 0
		}
		if c.AutoFlush && len(c.Out) > 0 {
			if err := c.Flush(); err != nil {
				return err
			}
		}
		n, err := c.nc.Read(c.rbuf[c.w:])
		c.w += n
		if err != nil && c.w-c.r < k {
			return err
		}
	}
	return nil
}

// frameLen parses the frame header at rbuf[r:w]: header length and payload
// length, or ok=false when the header is not complete yet.
func (c *Conn) frameLen() (hl, n int, ok bool) {
	avail := c.w - c.r
	if avail < 2 {
		return 0, 0, false
	}
	b := c.rbuf[c.r:c.w]
	hl, n = 2, int(b[1]&0x7f)
	switch n {
	case 126:
		hl = 4
	case 127:
		hl = 10
	}
	if b[1]&0x80 != 0 {
		hl += 4
	}
	if avail < hl {
		return hl, 0, false
	}
	switch n {
	case 126:
		n = int(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		v := binary.BigEndian.Uint64(b[2:10])
		if v > maxMessage {
			v = maxMessage + 1
		}
		n = int(v)
	}
	return hl, n, true
}

// HasFrame reports whether a whole frame is already buffered, so a read
// would not block.
func (c *Conn) HasFrame() bool {
	hl, n, ok := c.frameLen()
	return ok && c.w-c.r >= hl+n
}

func (c *Conn) readFrame() (op byte, fin bool, p []byte, err error) {
	if err := c.need(2); err != nil {
		return 0, false, nil, err
	}
	hl, _, ok := c.frameLen()
	if !ok {
		if err := c.need(hl); err != nil {
			return 0, false, nil, err
		}
	}
	hl, n, _ := c.frameLen()
	if n > maxMessage {
		return 0, false, nil, fmt.Errorf("%w: message too large", ErrProtocol)
	}
	if err := c.need(hl + n); err != nil {
		return 0, false, nil, err
	}
	b := c.rbuf[c.r:]
	op, fin = b[0]&0x0f, b[0]&0x80 != 0
	p = b[hl : hl+n]
	if b[1]&0x80 != 0 { // a masked server frame: tolerate it
		key := b[hl-4 : hl]
		for i := range p {
			p[i] ^= key[i&3]
		}
	}
	c.r += hl + n
	return op, fin, p, nil
}

// ReadMessage returns the next data message and its opcode. The payload is
// valid until the next call. Pings are answered; a close frame is answered
// and returned as a *CloseError.
func (c *Conn) ReadMessage() (byte, []byte, error) {
	for {
		op, fin, p, err := c.readFrame()
		if err != nil {
			return 0, nil, err
		}
		switch op {
		case opPing:
			c.pings.Add(1)
			if err := c.writeControl(opPong, p); err != nil {
				return 0, nil, err
			}
		case opPong:
		case opClose:
			ce := &CloseError{Code: 1005}
			if len(p) >= 2 {
				ce.Code = int(binary.BigEndian.Uint16(p))
				ce.Reason = string(p[2:])
			}
			var echo [2]byte
			binary.BigEndian.PutUint16(echo[:], uint16(ce.Code))
			if ce.Code == 1005 {
				_ = c.writeControl(opClose, nil)
			} else {
				_ = c.writeControl(opClose, echo[:])
			}
			return 0, nil, ce
		case opCont:
			if c.fragOp == 0 {
				return 0, nil, fmt.Errorf("%w: stray continuation", ErrProtocol)
			}
			c.frag = append(c.frag, p...)
			if fin {
				op := c.fragOp
				c.fragOp = 0
				return op, c.frag, nil
			}
		case opText, opBin:
			if fin {
				return op, p, nil
			}
			c.fragOp = op
			c.frag = append(c.frag[:0], p...)
		default:
			return 0, nil, fmt.Errorf("%w: opcode %d", ErrProtocol, op)
		}
	}
}

// appendHeader appends a masked frame header (zero key) for n payload bytes.
func appendHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n < 1<<16:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, 0, 0, 0, 0)
}

// AppendText appends one text frame carrying p to Out.
func (c *Conn) AppendText(p []byte) {
	c.Out = appendHeader(c.Out, opText, len(p))
	c.Out = append(c.Out, p...)
}

// AppendHeader appends a text frame header for n bytes to Out; the caller
// appends exactly n payload bytes next.
func (c *Conn) AppendHeader(n int) { c.Out = appendHeader(c.Out, opText, n) }

// Flush writes Out and empties it.
func (c *Conn) Flush() error {
	if len(c.Out) == 0 {
		return nil
	}
	c.wmu.Lock()
	_, err := c.nc.Write(c.Out)
	c.wmu.Unlock()
	c.Out = c.Out[:0]
	return err
}

// WriteMessage writes one text message at once; it may be used by a
// goroutine other than the one that owns Out.
func (c *Conn) WriteMessage(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeText(p)
}

// Pings returns how many pings the relay sent on this connection (each was
// answered by ReadMessage); safe from any goroutine.
func (c *Conn) Pings() uint64 { return c.pings.Load() }

// WriteMessageWithin is WriteMessage giving up after d. The deadline is set
// and cleared under the write lock, so it never outlives this write or
// reaches a pong written later by the reading goroutine.
func (c *Conn) WriteMessageWithin(p []byte, d time.Duration) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(d))
	defer c.nc.SetWriteDeadline(time.Time{})
	return c.writeText(p)
}

// writeText writes one text message; the caller holds wmu.
func (c *Conn) writeText(p []byte) error {
	c.scratch = appendHeader(c.scratch[:0], opText, len(p))
	c.scratch = append(c.scratch, p...)
	_, err := c.nc.Write(c.scratch)
	return err
}

func (c *Conn) writeControl(op byte, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return nil
	}
	if op == opClose {
		c.closed = true
	}
	c.scratch = appendHeader(c.scratch[:0], op, len(p))
	c.scratch = append(c.scratch, p...)
	_, err := c.nc.Write(c.scratch)
	return err
}

// SendClose sends a close frame with code unless one was sent already.
func (c *Conn) SendClose(code int, wait time.Duration) error {
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], uint16(code))
	_ = c.nc.SetWriteDeadline(time.Now().Add(wait))
	return c.writeControl(opClose, p[:])
}

// CloseHandshake sends a close frame and waits up to wait for the relay's
// answer, discarding data that arrives first, then closes the socket. It
// returns the code the relay answered with (0 if none arrived).
func (c *Conn) CloseHandshake(code int, wait time.Duration) int {
	defer c.nc.Close()
	if c.SendClose(code, wait) != nil {
		return 0
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(wait))
	for range 1 << 20 { // bounded: data before the close frame is skipped
		_, _, err := c.ReadMessage()
		var ce *CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if err != nil {
			return 0
		}
	}
	return 0
}

// Close sends a close frame (best effort, without waiting) and closes the
// socket.
func (c *Conn) Close(code int) {
	_ = c.SendClose(code, 100*time.Millisecond)
	c.nc.Close()
}

// Abort closes the socket without a close frame.
func (c *Conn) Abort() { c.nc.Close() }
