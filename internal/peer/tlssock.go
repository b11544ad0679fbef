package peer

import (
	"crypto/tls"
	"net"
	"slices"
	"syscall"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
)

// NewTLSListener serves TLS with config on ln's connections, as
// tls.NewListener does, with one difference: each TCP connection sits
// under crypto/tls in a tlsSock, so that once it is upgraded a Conn made
// with Options.Loops can move it onto an event loop (tlsloop_linux.go)
// and keep the standard library's TLS. config is cloned; "http/1.1" is
// added to its ALPN protocols if missing, as http.Server.ServeTLS does.
// Serve the result with http.Server.Serve.
func NewTLSListener(ln net.Listener, config *tls.Config) net.Listener {
	config = config.Clone()
	if !slices.Contains(config.NextProtos, "http/1.1") {
		config.NextProtos = append(config.NextProtos, "http/1.1")
	}
	return &tlsListener{Listener: ln, config: config}
}

type tlsListener struct {
	net.Listener
	config *tls.Config
}

func (l *tlsListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(&tlsSock{Conn: nc}, l.config), nil
}

// tlsSock is the connection under a tls.Conn made by NewTLSListener.
//
// Until an event loop takes the connection over it passes everything
// through to the socket: the TLS handshake, the HTTP request and the 101
// response go through it as through any net.Conn, on the serving
// goroutine. Once on a loop (loop set) the loop alone uses it: Read hands
// crypto/tls the ciphertext the loop read from the socket and fed it, or
// errNoInput, a temporary net.Error, when none is left (crypto/tls keeps
// a partial record and does not make a temporary read error permanent);
// Write appends ciphertext to out, which the loop writes to the socket
// without blocking. Write never fails (crypto/tls makes a write error
// permanent), and deadlines are the loop's timers.
type tlsSock struct {
	net.Conn // the accepted connection (connection accounting), for the handshake and Close

	// Set when a loop takes the connection (newTLSLoopConn, attach).
	tc   *tls.Conn
	tcp  *net.TCPConn
	raw  syscall.RawConn
	loop bool

	// Loop only.
	in         []byte       // ciphertext fed by the loop, not yet read by crypto/tls
	inBuf      *bufpool.Buf // owns in when it outlives the loop's read buffer (keep)
	out        *bufpool.Buf // ciphertext to write: out.B[outR:outW]
	outR, outW int
	ei, eoff   int  // the batch being encrypted: next item, bytes of its frame done
	dead       bool // the socket is closed: writes are dropped

	// Where the input stands in the TLS record stream: Read hands
	// crypto/tls at most the rest of one record (see record).
	rhdr  [5]byte // the current record's header, rhn bytes of it read
	rhn   int
	rleft int // bytes of the current record's body not yet read
}

// errNoInput is what a tlsSock on a loop returns when crypto/tls wants
// more input than the loop has fed it.
var errNoInput net.Error = noInput{}

type noInput struct{}

func (noInput) Error() string   { return "peer: no TLS input buffered" }
func (noInput) Timeout() bool   { return false }
func (noInput) Temporary() bool { return true }

// NetConn returns the connection under the sock (connection accounting
// looks through it).
func (s *tlsSock) NetConn() net.Conn { return s.Conn }

// tcpConn returns the TCP socket under the sock, or nil when it is not
// one or bytes of it are still buffered above it (a PROXY header's).
func (s *tlsSock) tcpConn() *net.TCPConn {
	switch x := s.Conn.(type) {
	case *net.TCPConn:
		return x
	case interface{ TCPConn() *net.TCPConn }:
		return x.TCPConn()
	}
	return nil
}

func (s *tlsSock) Read(p []byte) (int, error) {
	if !s.loop {
		return s.Conn.Read(p)
	}
	if len(s.in) == 0 {
		s.releaseIn()
		return 0, errNoInput
	}
	n := copy(p, s.in[:s.record(len(s.in))])
	s.advance(s.in[:n])
	s.in = s.in[n:]
	return n, nil
}

// record returns how many of the next m input bytes belong to the current
// TLS record (at least one). Handing crypto/tls one record at a time keeps
// its input buffer within one record's size (tlstrim_linux.go).
func (s *tlsSock) record(m int) int {
	if s.rhn < len(s.rhdr) {
		need := len(s.rhdr) - s.rhn
		if m <= need {
			return m
		}
		h := s.rhdr
		copy(h[s.rhn:], s.in[:need])
		return min(m, need+(int(h[3])<<8|int(h[4])))
	}
	return min(m, s.rleft)
}

// advance moves the record position past b, bytes handed to crypto/tls.
func (s *tlsSock) advance(b []byte) {
	for len(b) > 0 {
		if s.rhn < len(s.rhdr) {
			k := copy(s.rhdr[s.rhn:], b)
			s.rhn += k
			b = b[k:]
			if s.rhn == len(s.rhdr) {
				s.rleft = int(s.rhdr[3])<<8 | int(s.rhdr[4])
				if s.rleft == 0 {
					s.rhn = 0
				}
			}
			continue
		}
		k := min(len(b), s.rleft)
		s.rleft -= k
		b = b[k:]
		if s.rleft == 0 {
			s.rhn = 0
		}
	}
}

func (s *tlsSock) Write(p []byte) (int, error) {
	if !s.loop {
		return s.Conn.Write(p)
	}
	if s.dead {
		return len(p), nil
	}
	if s.out == nil {
		s.out = bufpool.Get(len(p))
		s.outR, s.outW = 0, 0
	} else if s.outW+len(p) > len(s.out.B) {
		if s.outR > 0 {
			s.outW = copy(s.out.B, s.out.B[s.outR:s.outW])
			s.outR = 0
		}
		s.out = bufpool.Grow(s.out, s.outW, s.outW+len(p))
	}
	s.outW += copy(s.out.B[s.outW:], p)
	return len(p), nil
}

func (s *tlsSock) SetDeadline(t time.Time) error {
	if s.loop {
		return nil
	}
	return s.Conn.SetDeadline(t)
}

func (s *tlsSock) SetReadDeadline(t time.Time) error {
	if s.loop {
		return nil
	}
	return s.Conn.SetReadDeadline(t)
}

func (s *tlsSock) SetWriteDeadline(t time.Time) error {
	if s.loop {
		return nil
	}
	return s.Conn.SetWriteDeadline(t)
}

// feed gives crypto/tls p, ciphertext the loop has read.
func (s *tlsSock) feed(p []byte) {
	if len(s.in) == 0 {
		s.releaseIn()
		s.in = p
		return
	}
	s.keep()
	n := len(s.in)
	s.inBuf = bufpool.Grow(s.inBuf, n, n+len(p))
	copy(s.inBuf.B[n:], p)
	s.in = s.inBuf.B[:n+len(p)]
}

// keep copies unread input out of the loop's read buffer, which the next
// read overwrites.
func (s *tlsSock) keep() {
	if len(s.in) == 0 || s.inBuf != nil {
		return
	}
	s.inBuf = bufpool.Get(len(s.in))
	s.in = s.inBuf.B[:copy(s.inBuf.B, s.in)]
}

func (s *tlsSock) releaseIn() {
	s.in = nil
	if s.inBuf != nil {
		s.inBuf.Release()
		s.inBuf = nil
	}
}

// pending returns the ciphertext waiting to be written.
func (s *tlsSock) pending() []byte {
	if s.out == nil {
		return nil
	}
	return s.out.B[s.outR:s.outW]
}

// wrote marks n bytes of pending as written, giving the buffer back once
// nothing is left.
func (s *tlsSock) wrote(n int) {
	s.outR += n
	if s.outR == s.outW {
		s.out.Release()
		s.out, s.outR, s.outW = nil, 0, 0
	}
}

// release drops the buffers; the socket is closed.
func (s *tlsSock) release() {
	s.dead = true
	s.releaseIn()
	if s.out != nil {
		s.out.Release()
		s.out, s.outR, s.outW = nil, 0, 0
	}
}

// hangUp closes the connection's socket at once. Under TLS that is the
// connection below crypto/tls: tls.Conn.Close would first say
// close_notify, and wait up to five seconds for a peer that does not read
// (a stalled peer, or the write that just failed).
func (c *Conn) hangUp() {
	if tc, ok := c.nc.(*tls.Conn); ok {
		tc.NetConn().Close()
		return
	}
	c.nc.Close()
}
