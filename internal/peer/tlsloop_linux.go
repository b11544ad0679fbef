//go:build linux

package peer

import (
	"crypto/tls"
	"net"
	"sync"
	"syscall"

	"github.com/pyrycode/pyrycode-relay/internal/evloop"
	"golang.org/x/sys/unix"
)

// TLS on the event loop. The handshake, the HTTP request and the 101 go
// through crypto/tls on net/http's serving goroutine, over a tlsSock that
// passes them through to the socket. Once the connection is upgraded and
// started, its socket moves to a loop like a plain one (attach), the
// tls.Conn stays, and the sock is fed by the loop: the loop reads
// ciphertext into the first half of its buffer, calls tls.Conn.Read into
// the second half until crypto/tls has nothing more to return (errNoInput)
// and runs the plaintext through the frame reader; crypto/tls's input
// buffers are lent for the drain only (tlstrim_linux.go). Writes are the loop's
// only (no inline writes): a batch of frames is packed into one plaintext
// record at a time, tls.Conn.Write encrypts it into the sock's output,
// and the loop writes that without blocking. A batch's frames are
// released once all of its ciphertext is on the wire, so the write
// deadline, the byte budgets and the close handshake keep their meaning;
// at most one piece (tlsPiece of plaintext) of ciphertext is held beyond
// the queue while the socket is slow. An idle TLS connection owns no
// goroutine and no buffer of ours; what crypto/tls keeps is its own.

const (
	tlsReadSize = evloop.BufSize / 2 // ciphertext per read; the rest of the loop's buffer takes the plaintext
	tlsPiece    = 16 << 10           // plaintext per tls.Conn.Write: one full record
)

var tlsScratch = sync.Pool{New: func() any { return new([tlsPiece]byte) }}

// newTLSLoopConn returns the loop side of a TLS connection accepted by
// NewTLSListener, or nil when it cannot go on a loop (another listener,
// no TCP socket under it, or a handshake not yet done: the loop cannot
// run one, a would-block error would end it): it keeps its reader
// goroutine then.
func newTLSLoopConn(c *Conn, tc *tls.Conn) *loopConn {
	s, ok := tc.NetConn().(*tlsSock)
	if !ok || !tc.ConnectionState().HandshakeComplete {
		return nil
	}
	tcp := s.tcpConn()
	if tcp == nil {
		return nil
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	s.tc, s.tcp, s.raw = tc, tcp, raw
	// Ciphertext crypto/tls read along with the request: where the next
	// record starts.
	s.advance(tlsPendingInput(tc))
	ls := newLoopConn(c)
	ls.tls = s
	return ls
}

// sockets returns the socket to take over and the runtime's connection
// to close once it is.
func (ls *loopConn) sockets() (syscall.RawConn, *net.TCPConn) {
	if ls.tls != nil {
		return ls.tls.raw, ls.tls.tcp
	}
	tcp := tcpOf(ls.c.nc)
	if tcp == nil {
		return nil, nil
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return nil, nil
	}
	return raw, tcp
}

// tlsReadable reads what the socket has and handles what it decrypts to.
func (ls *loopConn) tlsReadable() {
	buf := ls.l.Buf()[:min(tlsReadSize, ls.c.opt.ReadSize)]
	n, err := evloop.Read(ls.fd, buf)
	if err == unix.EAGAIN {
		return
	}
	if n <= 0 {
		ls.teardown(false) // the peer hung up or the socket failed
		ls.tryFinish()
		return
	}
	ls.tls.feed(buf[:n])
	ls.tlsDrain()
	if ls.ended {
		ls.tryFinish()
	}
}

// tlsDrain runs everything crypto/tls can decrypt from what it holds and
// was fed through the frame reader, until it needs more input, the handler
// parks the connection or the connection ends. Input crypto/tls has not
// taken yet is then copied out of the loop's buffer.
func (ls *loopConn) tlsDrain() {
	s := ls.tls
	plain := ls.l.Buf()[tlsReadSize:]
	lendTLSInput(s.tc)
	for !ls.ended && !ls.paused {
		n, err := s.tc.Read(plain)
		if n > 0 {
			ls.input(plain[:n])
		}
		if err == errNoInput {
			reclaimTLSInput(s.tc)
			break
		}
		if err != nil && !ls.ended {
			// The peer's close_notify or EOF, a bad record, an alert:
			// the connection is gone, as when a plain socket hangs up.
			ls.teardown(false)
		}
	}
	s.keep()
	if len(s.pending()) > 0 && ls.wpos >= len(ls.wq) && !ls.ended {
		// crypto/tls answered something by itself (a key update): out
		// with it now if the socket takes it; otherwise it goes ahead of
		// the next batch.
		if n, err := evloop.Write(ls.fd, s.pending()); err == nil {
			s.wrote(n)
		}
	}
}

// tlsWriteSome is writeSome for a TLS connection: it encrypts the current
// batch a piece at a time, writing each piece's ciphertext before the
// next is made, and reports whether the batch is on the wire. Frames are
// released once everything encrypted up to their end has been written.
func (ls *loopConn) tlsWriteSome() (bool, error) {
	s := ls.tls
	if ls.wend <= ls.wpos {
		// A new write: at most maxBatch frames, about coalesceLimit
		// bytes (a larger frame goes alone).
		k, size := ls.wpos, 0
		for ; k < len(ls.wq) && k-ls.wpos < maxBatch && (k == ls.wpos || size+len(ls.wq[k].data) <= coalesceLimit); k++ {
			size += len(ls.wq[k].data)
			if ls.wq[k].op == OpClose {
				k++
				break
			}
		}
		ls.wend = k
		s.ei, s.eoff = ls.wpos, 0
		ls.l.Stop(&ls.writeT) // the deadline is per write
	}
	for {
		if p := s.pending(); len(p) > 0 {
			n, err := evloop.Write(ls.fd, p)
			if err == unix.EAGAIN {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			s.wrote(n)
			if n < len(p) {
				return false, nil
			}
		}
		// Everything encrypted so far is on the wire.
		if ls.tlsRetire() || ls.wpos >= ls.wend {
			ls.l.Stop(&ls.writeT)
			return true, nil
		}
		if err := ls.tlsEncrypt(); err != nil {
			return false, err
		}
	}
}

// tlsEncrypt encrypts the next piece of the batch: frames from s.ei on,
// headers and payloads, packed into one record of at most tlsPiece bytes.
func (ls *loopConn) tlsEncrypt() error {
	s := ls.tls
	sc := tlsScratch.Get().(*[tlsPiece]byte)
	defer tlsScratch.Put(sc)
	n := 0
	for s.ei < ls.wend && n < len(sc) {
		it := &ls.wq[s.ei]
		var hdr [maxHeader]byte
		hl := 0
		if it.op != opRaw {
			hl = putHeader(hdr[:], it.op, len(it.data))
		}
		if s.eoff < hl {
			k := copy(sc[n:], hdr[s.eoff:hl])
			n += k
			s.eoff += k
		}
		if s.eoff >= hl {
			k := copy(sc[n:], it.data[s.eoff-hl:])
			n += k
			s.eoff += k
		}
		if s.eoff == hl+len(it.data) {
			s.ei++
			s.eoff = 0
		}
	}
	_, err := s.tc.Write(sc[:n])
	return err
}

// tlsRetire releases the frames of the batch whose ciphertext is all on
// the wire, as writeSome does for the frames it wrote. It reports whether
// our close frame was among them (the batch is then over).
func (ls *loopConn) tlsRetire() bool {
	s := ls.tls
	written, sentClose := 0, false
	var now int64
	for ls.wpos < s.ei {
		it := &ls.wq[ls.wpos]
		ls.wpos++
		w, cl := ls.retire(it, &now)
		written += w
		sentClose = sentClose || cl
	}
	ls.credit(written)
	if !sentClose {
		return false
	}
	ls.closeFrameOut()
	s.ei, s.eoff = 0, 0
	if ls.ended {
		ls.tryFinish()
	}
	return true
}

// tlsFinish runs just before the socket is closed: after a clean close
// (both close frames passed, everything written) it says close_notify, if
// the socket takes it at once; then the sock lets its buffers go.
func (ls *loopConn) tlsFinish(fd int) {
	s := ls.tls
	if ls.flushEnd && !ls.c.wfailed && len(s.pending()) == 0 {
		if s.tc.CloseWrite() == nil {
			_, _ = evloop.Write(fd, s.pending())
		}
	}
	s.release()
}
