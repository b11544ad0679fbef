// Package front takes WebSocket upgrades off net/http's per-connection
// machinery.
//
// An http.Server gives every connection it serves a 4 KiB reader and a
// 4 KiB writer from its pools, a 2 KiB response buffer, and on a hijack a
// fresh 4 KiB writer; a hijacked connection returns none of them. For a
// relay, whose connections are nearly all upgrades, that is about 14 KiB of
// garbage per connection, and during a burst of connects (a restart, a
// reconnect storm) the collector lets the heap run to twice what is live,
// so the garbage sets the relay's resident size for minutes after.
//
// A Listener sits between the server and its listener. It accepts the
// connections itself and reads each one's request head into a pooled
// buffer, on a goroutine of its own (completing the TLS handshake first
// when the connection is a *tls.Conn). A request that is plainly a
// WebSocket upgrade the caller serves (Listener's want reports true) is
// handed to the server's Handler directly, with a small ResponseWriter
// that can hijack; its buffers go back to the pool once the handler
// returns. Every other connection, and any head the fast path is not sure
// of, goes to the http.Server through Accept, with the bytes already read
// replayed in front of the rest: net/http then answers exactly as it would
// have (keep-alive, 400 for malformed requests, 431 for large heads, the
// health and status endpoints).
//
// The fast path is a strict subset of what net/http serves. A head is
// taken only when it is complete within 4 KiB, is "GET ... HTTP/1.1", has
// exactly one valid Host line, only valid header names and values, no
// folded lines and no body, Content-Length, Transfer-Encoding or Expect,
// and http.ReadRequest parses it. The handler sees what net/http would
// give it, except that the request's context carries only what the
// server's ConnContext hook adds (not http.ServerContextKey or
// http.LocalAddrContextKey) and r.TLS is not set (the relay reads
// neither). A response the handler writes without hijacking (a refusal)
// is sent with Connection: close and the connection closed; net/http
// would keep it open, but no WebSocket client reuses a refused upgrade.
//
// Deadlines follow the server's: ReadTimeout (or ReadHeaderTimeout) for
// the TLS handshake, ReadHeaderTimeout for the head, WriteTimeout for a
// refusal; a hijack clears them, as net/http's does. Close stops accepting
// and closes the connections still in their handshake or head.
package front

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// headSize is the largest head the fast path takes. Real clients send
// a few hundred bytes; a larger head goes to net/http.
const headSize = 4096

// Listener is a net.Listener to give to srv.Serve: see the package
// comment.
type Listener struct {
	ln   net.Listener
	srv  *http.Server
	want func(*http.Request) bool

	handed chan net.Conn // connections for net/http
	done   chan struct{} // closed by Close
	start  sync.Once
	stop   sync.Once

	mu      sync.Mutex
	closed  bool
	pending map[net.Conn]struct{} // in their TLS handshake or head
	peak    int                   // the most pending since the map was made
}

// New returns a Listener over ln for srv, which must then Serve it. want
// picks the requests served on the fast path; it sees a parsed request
// that passed the checks in the package comment, and should accept only
// WebSocket upgrades for paths whose handler hijacks.
func New(ln net.Listener, srv *http.Server, want func(*http.Request) bool) *Listener {
	return &Listener{
		ln:      ln,
		srv:     srv,
		want:    want,
		handed:  make(chan net.Conn),
		done:    make(chan struct{}),
		pending: make(map[net.Conn]struct{}),
	}
}

// Accept returns the next connection for net/http.
func (l *Listener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case nc := <-l.handed:
		return nc, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the connections still in their
// handshake or head. Connections already handed to a handler or to
// net/http are theirs.
func (l *Listener) Close() error {
	var err error
	l.stop.Do(func() {
		l.mu.Lock()
		l.closed = true
		for nc := range l.pending {
			nc.Close()
		}
		clear(l.pending)
		l.mu.Unlock()
		close(l.done)
		err = l.ln.Close()
	})
	return err
}

// Addr is the listener's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// acceptLoop accepts until the listener is closed. Errors other than that
// (out of descriptors, an aborted connection) are retried after a pause
// that doubles up to a second, as net/http does.
func (l *Listener) acceptLoop() {
	var pause time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				l.Close()
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			l.logf("http: Accept error: %v; retrying in %v", err, pause)
			select {
			case <-time.After(pause):
			case <-l.done:
				return
			}
			continue
		}
		pause = 0
		go l.serve(nc)
	}
}

func (l *Listener) logf(format string, args ...any) {
	if l.srv.ErrorLog != nil {
		l.srv.ErrorLog.Printf(format, args...)
	}
}

// track records nc as in its handshake or head; false once closed.
func (l *Listener) track(nc net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.pending[nc] = struct{}{}
	l.peak = max(l.peak, len(l.pending))
	return true
}

// untrack reports false when Close has already closed nc.
func (l *Listener) untrack(nc net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	delete(l.pending, nc)
	if len(l.pending) == 0 && l.peak > 1024 {
		// A map keeps the room of its largest size: after a storm of
		// connects, start afresh rather than hold it.
		l.pending, l.peak = make(map[net.Conn]struct{}), 0
	}
	return true
}

// hand gives nc to net/http.
func (l *Listener) hand(nc net.Conn) {
	select {
	case l.handed <- nc:
	case <-l.done:
		nc.Close()
	}
}

// handshake is the pooled state of one connection's head and fast path.
// The head is read straight into br's buffer.
type handshake struct {
	br *bufio.Reader
	bw *bufio.Writer
	rw bufio.ReadWriter
	w  writer
}

// spares keeps a few handshakes for reuse. It is a short list and not a
// sync.Pool: after a burst of connects a pool would hold one per
// handshake that was in flight until two collections pass, and an idle
// relay seldom collects.
var spares struct {
	sync.Mutex
	list []*handshake
}

const maxSpares = 32

func getHandshake() *handshake {
	spares.Lock()
	if n := len(spares.list); n > 0 {
		h := spares.list[n-1]
		spares.list = spares.list[:n-1]
		spares.Unlock()
		return h
	}
	spares.Unlock()
	h := &handshake{br: bufio.NewReaderSize(nil, headSize), bw: bufio.NewWriterSize(nil, 16)}
	h.rw = bufio.ReadWriter{Reader: h.br, Writer: h.bw}
	return h
}

func (h *handshake) release() {
	h.br.Reset(nil)
	h.bw.Reset(nil)
	h.w = writer{}
	spares.Lock()
	if len(spares.list) < maxSpares {
		spares.list = append(spares.list, h)
	}
	spares.Unlock()
}

// serve runs one connection's TLS handshake and head, then the fast path
// or the hand-over.
func (l *Listener) serve(nc net.Conn) {
	if !l.track(nc) {
		nc.Close()
		return
	}
	if tc, ok := nc.(*tls.Conn); ok {
		d := l.srv.ReadTimeout
		if d <= 0 {
			d = l.srv.ReadHeaderTimeout
		}
		if d > 0 {
			_ = tc.SetDeadline(time.Now().Add(d))
		}
		if err := tc.HandshakeContext(context.Background()); err != nil {
			if l.untrack(nc) {
				l.logf("http: TLS handshake error from %s: %v", nc.RemoteAddr(), err)
				nc.Close()
			}
			return
		}
		_ = tc.SetWriteDeadline(time.Time{})
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
			// Another protocol (h2, acme-tls/1): net/http's to run.
			if l.untrack(nc) {
				_ = tc.SetDeadline(time.Time{})
				l.hand(nc)
			}
			return
		}
	}
	if d := l.srv.ReadHeaderTimeout; d > 0 {
		_ = nc.SetReadDeadline(time.Now().Add(d))
	}
	h := getHandshake()
	h.br.Reset(nc)
	end, err := readHead(h.br)
	if !l.untrack(nc) {
		h.release()
		return
	}
	n := h.br.Buffered()
	switch {
	case end < 0 && (n == 0 || !errors.Is(err, io.EOF) && err != nil):
		// Nothing came, or the read timed out or failed: net/http closes
		// these without a word too.
		nc.Close()
		h.release()
		return
	case end < 0:
		// Full without a head's end, or cut short by the client: net/http
		// answers (431, 400).
		read, _ := h.br.Peek(n)
		l.handOver(nc, h, read)
		return
	}
	// read stays valid after parse: ReadRequest consumes the head from
	// the buffer without reading into it again.
	read, _ := h.br.Peek(n)
	req := h.parse(end)
	if req == nil || !l.want(req) {
		l.handOver(nc, h, read)
		return
	}
	l.upgrade(nc, h, req)
}

// handOver gives nc to net/http with read, the bytes read so far, in
// front.
func (l *Listener) handOver(nc net.Conn, h *handshake, read []byte) {
	_ = nc.SetReadDeadline(time.Time{})
	rc := &replayConn{Conn: nc, buf: slices.Clone(read)}
	h.release()
	l.hand(rc)
}

// readHead reads into br's buffer until it holds a request head's end
// ("\r\n\r\n"; end is the index just past it), the buffer is full, or a
// read fails. end is -1 without a complete head; what was read is
// br.Buffered() bytes.
func readHead(br *bufio.Reader) (end int, err error) {
	for n := 0; n < br.Size(); {
		// Asking for one byte more than is buffered makes one read.
		_, err = br.Peek(n + 1)
		from := max(0, n-3)
		n = br.Buffered()
		b, _ := br.Peek(n)
		if i := bytes.Index(b[from:], crlf2); i >= 0 {
			return from + i + len(crlf2), nil
		}
		if err != nil {
			return -1, err
		}
	}
	return -1, nil
}

var crlf2 = []byte("\r\n\r\n")

// parse checks the head, the first end buffered bytes, against the fast
// path's rules and parses it, leaving what follows it buffered. nil: not
// for the fast path.
func (h *handshake) parse(end int) *http.Request {
	n := h.br.Buffered()
	head, _ := h.br.Peek(end)
	if !plainHead(head) {
		return nil
	}
	req, err := http.ReadRequest(h.br)
	if err != nil || h.br.Buffered() != n-end {
		return nil
	}
	if req.Method != http.MethodGet || req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.ContentLength != 0 || req.Host == "" {
		return nil
	}
	return req
}

// plainHead reports whether head (ending in "\r\n\r\n") is a GET request
// for HTTP/1.1 whose header lines net/http would accept as they are, with
// exactly one Host, and none that asks for a body or an interim answer.
func plainHead(head []byte) bool {
	line, rest, _ := bytes.Cut(head, crlf2[:2])
	if !bytes.HasPrefix(line, []byte("GET ")) || !bytes.HasSuffix(line, []byte(" HTTP/1.1")) {
		return false
	}
	hosts := 0
	for {
		line, rest, _ = bytes.Cut(rest, crlf2[:2])
		if len(line) == 0 {
			return hosts == 1
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !httpguts.ValidHeaderFieldName(string(name)) {
			return false // also a folded line: it starts with a space
		}
		value = bytes.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(string(value)) {
			return false
		}
		switch {
		case asciiEqualFold(name, "Host"):
			if !httpguts.ValidHostHeader(string(value)) {
				return false
			}
			hosts++
		case asciiEqualFold(name, "Content-Length"), asciiEqualFold(name, "Transfer-Encoding"), asciiEqualFold(name, "Expect"):
			return false
		}
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i]|0x20, s[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

// upgrade runs the handler on the fast path, then answers a request it did
// not hijack.
func (l *Listener) upgrade(nc net.Conn, h *handshake, req *http.Request) {
	ctx := context.Background()
	if l.srv.ConnContext != nil {
		ctx = l.srv.ConnContext(ctx, nc)
	}
	req = req.WithContext(ctx)
	req.RemoteAddr = nc.RemoteAddr().String()
	h.w = writer{nc: nc, h: h}
	if d := l.srv.WriteTimeout; d > 0 {
		_ = nc.SetWriteDeadline(time.Now().Add(d))
	}
	defer func() {
		// As net/http does: a panicking handler costs its own connection
		// only, and is logged unless it is http.ErrAbortHandler.
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				l.logf("http: panic serving %v: %v\n%s", req.RemoteAddr, v, buf)
			}
			if !h.w.hijacked {
				nc.Close()
			}
		}
		h.release()
	}()
	l.srv.Handler.ServeHTTP(&h.w, req)
	if !h.w.hijacked {
		h.w.finish()
		nc.Close()
	}
}

// writer is the fast path's ResponseWriter: it hijacks, or holds what the
// handler writes until it returns.
type writer struct {
	nc       net.Conn
	h        *handshake
	header   http.Header
	status   int
	body     []byte
	hijacked bool
}

func (w *writer) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *writer) WriteHeader(code int) {
	if w.hijacked || w.status != 0 || code < 200 {
		return
	}
	w.status = code
}

func (w *writer) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, p...)
	return len(p), nil
}

// Flush does nothing: a refusal is written whole when the handler returns.
func (w *writer) Flush() {}

// Hijack hands the connection over with the bytes the client sent after
// its head in the reader; deadlines are cleared. The reader and writer are
// valid until the handler returns.
func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	_ = w.nc.SetDeadline(time.Time{})
	w.h.bw.Reset(w.nc)
	return w.nc, &w.h.rw, nil
}

// finish writes the response the handler made, closing the connection
// after it.
func (w *writer) finish() {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	hd := w.Header()
	bodyOK := status != http.StatusNoContent && status != http.StatusNotModified
	if bodyOK {
		if len(w.body) > 0 && hd.Get("Content-Type") == "" {
			hd.Set("Content-Type", http.DetectContentType(w.body))
		}
		hd.Set("Content-Length", strconv.Itoa(len(w.body)))
	} else {
		hd.Del("Content-Length")
	}
	if hd.Get("Date") == "" {
		hd.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	hd.Set("Connection", "close")
	text := http.StatusText(status)
	if text == "" {
		text = "status code " + strconv.Itoa(status)
	}
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + text + "\r\n")
	_ = hd.Write(&b)
	b.WriteString("\r\n")
	if bodyOK {
		b.Write(w.body)
	}
	_, _ = w.nc.Write(b.Bytes())
}

// replayConn is a connection handed to net/http: it reads buf first.
type replayConn struct {
	net.Conn
	buf []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		if len(c.buf) == 0 {
			c.buf = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the connection under the replay (connection accounting
// looks through it).
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// TCPConn returns the socket under the replay once its bytes are all read,
// so that a connection upgraded through net/http can still go on an event
// loop.
func (c *replayConn) TCPConn() *net.TCPConn {
	if len(c.buf) > 0 {
		return nil
	}
	switch x := c.Conn.(type) {
	case *net.TCPConn:
		return x
	case interface{ TCPConn() *net.TCPConn }:
		return x.TCPConn()
	}
	return nil
}
