package limits

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyBufSize holds a whole v1 header (at most 107 bytes), which the
// parser insists arrive in one read, and a typical v2 header.
const proxyBufSize = 256

// Errors that end a connection for its PROXY header. net/http answers the
// plain-HTTP ones with 400 and closes; over TLS the handshake fails.
var (
	errProxyUntrusted = errors.New("limits: PROXY header from a peer not in --trusted-proxies")
	errProxyMissing   = errors.New("limits: trusted peer did not send the required PROXY header")
	errProxyMalformed = errors.New("limits: malformed PROXY header")
)

type listener struct {
	net.Listener
	l *Limiter
}

// Accept counts the accepted connection; it never blocks on the client.
func (ln *listener) Accept() (net.Conn, error) {
	nc, err := ln.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return ln.l.accept(nc), nil
}

// proxy modes of a connection while its first bytes are pending.
const (
	proxyNone    uint8 = iota // no PROXY handling
	proxyReject               // untrusted peer: a PROXY header ends the connection
	proxyRequire              // trusted peer: a PROXY header must come first
)

// conn is an accepted connection and its slots. Close gives them back,
// once. It is held for the connection's whole life, so what only some
// connections need (PROXY protocol, a client other than the socket's
// peer) is in x, allocated only for them: 112 bytes per connection
// otherwise, not 208.
type conn struct {
	net.Conn
	l    *Limiter
	peer netip.AddrPort // the TCP peer, unmapped; invalid if not IP

	// plain is set once every byte buffered while reading the PROXY
	// header has been handed out (from the start without PROXY
	// handling); after that Read goes straight to the socket.
	plain atomic.Bool

	mu       sync.Mutex
	x        *connExtra // set at accept for PROXY handling, else on demand (mu)
	verdict  verdict
	global   bool // holds a global slot
	ipHeld   bool // holds a slot for ipKey
	closed   bool
	released bool       // ReleaseSocket: the socket object is gone
	ipKey    netip.Addr // the per-IP slot's key
}

// connExtra is the part of a conn only some connections need.
type connExtra struct {
	// Reading before the PROXY header is settled (rmu; untouched once
	// conn.plain is set).
	rmu  sync.Mutex
	mode uint8
	br   *bufio.Reader
	rerr error

	// Guarded by conn.mu.
	src    netip.AddrPort // the peer after PROXY: the header's source; invalid: the socket's peer
	remote netip.AddrPort // what RemoteAddr reports, when not the socket's
}

// extraLocked returns c.x, making it. conn.mu must be held, or c not yet
// shared.
func (c *conn) extraLocked() *connExtra {
	if c.x == nil {
		c.x = new(connExtra)
	}
	return c.x
}

func (l *Limiter) accept(nc net.Conn) *conn {
	c := &conn{Conn: nc, l: l, peer: addrPortOf(nc.RemoteAddr())}
	trusted := c.peer.IsValid() && l.isTrusted(c.peer.Addr())
	if l.cfg.ProxyProtocol {
		x := c.extraLocked()
		x.mode = proxyReject
		if trusted {
			x.mode = proxyRequire
		}
		x.br = bufio.NewReaderSize(nc, proxyBufSize)
	} else {
		c.plain.Store(true)
	}
	// A trusted peer's per-IP slot is taken later: after its PROXY header
	// for the address in it, or per request for the forwarded client.
	perIP := !trusted && c.peer.IsValid()
	var key netip.Addr
	if perIP {
		key = keyOf(c.peer.Addr())
	}
	c.verdict = l.admit(key, perIP)
	if c.verdict == admitted {
		c.global = true
		c.ipHeld, c.ipKey = perIP, key
	}
	return c
}

func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(normAddr(ap.Addr()), ap.Port())
}

// Read reads the PROXY header first when one is expected or must be
// refused, then the connection's bytes.
func (c *conn) Read(p []byte) (int, error) {
	if c.plain.Load() {
		return c.Conn.Read(p)
	}
	x := c.x // set at accept whenever plain is not
	x.rmu.Lock()
	defer x.rmu.Unlock()
	if c.plain.Load() {
		return c.Conn.Read(p)
	}
	if x.rerr != nil {
		return 0, x.rerr
	}
	if x.mode != proxyNone {
		if err := c.readProxyHeader(x); err != nil {
			x.rerr = err
			return 0, err
		}
		x.mode = proxyNone
	}
	if x.br.Buffered() > 0 {
		return x.br.Read(p) // hands out buffered bytes only; never blocks
	}
	x.br = nil
	c.plain.Store(true)
	return c.Conn.Read(p)
}

func (c *conn) readProxyHeader(x *connExtra) error {
	h, err := proxyproto.Read(x.br)
	if x.mode == proxyReject {
		switch {
		case errors.Is(err, proxyproto.ErrNoProxyProtocol):
			return nil
		case err == nil:
			c.l.proxyRefused.Add(1)
			return errProxyUntrusted
		case isNetErr(err):
			return err
		default: // a PROXY signature followed by garbage
			c.l.proxyRefused.Add(1)
			return errProxyUntrusted
		}
	}
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		c.l.proxyRefused.Add(1)
		return errProxyMissing
	case err != nil && isNetErr(err):
		return err
	case err != nil:
		c.l.proxyRefused.Add(1)
		return errProxyMalformed
	}
	src := c.peer
	if h.Command.IsProxy() {
		switch a := h.SourceAddr.(type) {
		case *net.TCPAddr:
			src = addrPortOf(a)
		case *net.UDPAddr:
			src = addrPortOf(a)
		}
		// A Unix-socket source has no IP: the proxy itself stays the peer.
	}
	// LOCAL (v2) or UNKNOWN (v1): the proxy's own connection, e.g. a
	// health check; the peer stays the proxy.
	if !src.IsValid() {
		src = c.peer
	}
	c.setSource(src)
	return nil
}

// isNetErr reports whether err came from the socket rather than from the
// header's content.
func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed)
}

// setSource records the peer named by a trusted PROXY header and, unless
// that peer is itself a trusted proxy, takes its per-IP slot.
func (c *conn) setSource(src netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if src != c.peer {
		x := c.extraLocked()
		x.src, x.remote = src, src
	}
	if c.closed || c.verdict != admitted || c.l.isTrusted(src.Addr()) {
		return
	}
	key := keyOf(src.Addr())
	if !c.l.acquireIP(key) {
		// Refused connections hold no slots.
		c.verdict = overIPCap
		c.l.release(c.global, netip.Addr{}, false)
		c.global = false
		return
	}
	c.ipHeld, c.ipKey = true, key
}

// state returns the connection's verdict and effective peer. A request
// can only arrive after the PROXY header, so both are final by then.
func (c *conn) state() (verdict, netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.x != nil && c.x.src.IsValid() {
		return c.verdict, c.x.src
	}
	return c.verdict, c.peer
}

// adopt makes the connection hold the HTTP-layer slot for key (taken for a
// forwarded client) until it closes, and report client as its remote
// address. It reports false if the connection is already closed; the
// caller then keeps the slot and must release it.
func (c *conn) adopt(key netip.Addr, client netip.AddrPort) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.ipHeld {
		return false
	}
	c.ipHeld, c.ipKey = true, key
	c.extraLocked().remote = client
	return true
}

// RemoteAddr reports the client: the PROXY header's source, or the
// forwarded client once an upgraded connection has been handed over, else
// the socket's peer. It never blocks.
func (c *conn) RemoteAddr() net.Addr {
	c.mu.Lock()
	var r netip.AddrPort
	if c.x != nil {
		r = c.x.remote
	}
	if !r.IsValid() && c.released {
		r = c.peer
	}
	inner := c.Conn
	c.mu.Unlock()
	if r.IsValid() {
		return net.TCPAddrFromAddrPort(r)
	}
	return inner.RemoteAddr()
}

// Close closes the socket and gives back the connection's slots. Only the
// first call gives anything back.
func (c *conn) Close() error {
	c.mu.Lock()
	inner := c.Conn // ReleaseSocket may swap it
	c.mu.Unlock()
	err := inner.Close()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return err
	}
	c.closed = true
	global, held, key := c.global, c.ipHeld, c.ipKey
	c.global, c.ipHeld = false, false
	c.mu.Unlock()
	c.l.release(global, key, held)
	return err
}

// CloseWrite shuts down the writing side, as net/http does before closing
// a connection it answered with Connection: close, so the client reads the
// answer rather than a reset.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// ReleaseSocket lets go of the socket object (the *net.TCPConn, its
// descriptor record and its two addresses: about 300 bytes) once the
// caller has taken the socket over with a descriptor of its own and closed
// the runtime's, as the event loops do. The wrapper keeps the connection's
// slots, which Close still gives back, and its remote address; reads and
// writes through it fail from now on.
func (c *conn) ReleaseSocket() {
	c.mu.Lock()
	c.released = true // RemoteAddr reports peer from now on
	c.Conn = releasedSocket{}
	c.mu.Unlock()
}

// releasedSocket stands in for a socket after ReleaseSocket.
type releasedSocket struct{}

var releasedAddr = &net.TCPAddr{}

func (releasedSocket) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (releasedSocket) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (releasedSocket) Close() error                     { return nil }
func (releasedSocket) LocalAddr() net.Addr              { return releasedAddr }
func (releasedSocket) RemoteAddr() net.Addr             { return releasedAddr }
func (releasedSocket) SetDeadline(time.Time) error      { return net.ErrClosed }
func (releasedSocket) SetReadDeadline(time.Time) error  { return net.ErrClosed }
func (releasedSocket) SetWriteDeadline(time.Time) error { return net.ErrClosed }

// TCPConn returns the underlying *net.TCPConn once no byte is buffered in
// the wrapper, for callers that write with writev or read the descriptor
// directly; nil otherwise. Close and deadlines must still go through the
// wrapper, so that the connection's slots are given back.
func (c *conn) TCPConn() *net.TCPConn {
	if !c.plain.Load() {
		return nil
	}
	c.mu.Lock()
	t, _ := c.Conn.(*net.TCPConn)
	c.mu.Unlock()
	return t
}
