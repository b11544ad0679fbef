//go:build linux

package peer

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// What an idle TLS connection keeps of crypto/tls is mostly two buffers it
// never shrinks: rawInput (ciphertext read, grown to the largest record
// read plus 512 bytes, the ClientHello's at least) and hand (handshake
// messages, grown to the ClientHello). With the hybrid post-quantum key
// share clients now send, that is about 3 KiB per connection, kept for its
// life though neither holds a byte once the loop has drained what was
// read. crypto/tls has no way to let them go, so the loop manages them:
//
//   - before a drain, an empty rawInput is lent a pooled buffer of
//     tlsInSize bytes (a whole record and bytes.Buffer's 512 spare: the
//     sock hands crypto/tls one record at a time, so it never needs more
//     and never grows it);
//   - after a drain that ended with errNoInput (crypto/tls's Read has
//     reset its plaintext reader, which points into rawInput), an empty
//     rawInput's buffer is taken back into the pool, and an empty hand is
//     dropped.
//
// So an idle connection keeps neither, and a busy loop reuses the same few
// buffers without allocating. A connection whose last record has not
// fully arrived keeps its buffer until it has (or the connection ends, at
// the latest by the heartbeat); crypto/tls on a goroutine would keep one
// as large.
//
// This touches unexported fields: they are looked up by name and type when
// the package loads, and if they are not found (another Go version) the
// buffers are left to crypto/tls; TestTLSTrimFindsBuffers fails then, so
// that the loss is noticed. Only the loop reads the connection, and
// crypto/tls's writes never touch these buffers, so nothing else can be
// using them.

// tlsInSize holds the largest record crypto/tls accepts (TLS 1.2: 5 + 2^14
// + 2048) and the 512 bytes bytes.Buffer.ReadFrom wants free.
const tlsInSize = 5 + 16384 + 2048 + 512

var tlsInPool = sync.Pool{New: func() any { return new([tlsInSize]byte) }}

// tlsBufOffsets are the offsets of rawInput and hand in a tls.Conn, or nil.
var tlsBufOffsets = findTLSBufs()

// tlsTrimAudited is the Go release whose crypto/tls this was checked
// against: that a Read ending in a temporary error leaves no reference
// into rawInput (its plaintext reader is reset first) and that hand is
// copied before it is parsed. Lending a pooled buffer relies on both: on
// another release a buffer taken back could still be referenced, and
// another connection's input would then land in it. So on any other
// release the trim is off (idle TLS connections keep about 3 KiB more)
// until someone re-reads crypto/tls/conn.go and moves this line.
const tlsTrimAudited = "go1.26"

func findTLSBufs() []uintptr {
	if v := runtime.Version(); v != tlsTrimAudited && !strings.HasPrefix(v, tlsTrimAudited+".") {
		return nil
	}
	t := reflect.TypeFor[tls.Conn]()
	bt := reflect.TypeFor[bytes.Buffer]()
	var offs []uintptr
	for _, name := range []string{"rawInput", "hand"} {
		f, ok := t.FieldByName(name)
		if !ok || f.Type != bt || len(f.Index) != 1 {
			return nil
		}
		offs = append(offs, f.Offset)
	}
	return offs
}

// tlsBuf returns the buffer at off in tc.
func tlsBuf(tc *tls.Conn, off uintptr) *bytes.Buffer {
	return (*bytes.Buffer)(unsafe.Add(unsafe.Pointer(tc), off))
}

// tlsPendingInput returns the ciphertext crypto/tls has read but not yet
// decrypted (nil when the buffers were not found). Loop only.
func tlsPendingInput(tc *tls.Conn) []byte {
	if tlsBufOffsets == nil {
		return nil
	}
	return tlsBuf(tc, tlsBufOffsets[0]).Bytes()
}

// lendTLSInput gives an empty rawInput a pooled buffer. Loop only, before
// a drain.
func lendTLSInput(tc *tls.Conn) {
	if tlsBufOffsets == nil {
		return
	}
	b := tlsBuf(tc, tlsBufOffsets[0])
	if b.Len() != 0 || b.Cap() == tlsInSize {
		return
	}
	*b = *bytes.NewBuffer(tlsInPool.Get().(*[tlsInSize]byte)[:0])
}

// reclaimTLSInput takes an empty rawInput's buffer back (into the pool if
// it is one of ours) and drops an empty hand. Loop only, after a Read that
// returned errNoInput.
func reclaimTLSInput(tc *tls.Conn) {
	if tlsBufOffsets == nil {
		return
	}
	if b := tlsBuf(tc, tlsBufOffsets[0]); b.Len() == 0 && b.Cap() > 0 {
		b.Reset()
		a := b.AvailableBuffer() // the whole array, now that it is reset
		*b = bytes.Buffer{}
		if cap(a) == tlsInSize {
			tlsInPool.Put((*[tlsInSize]byte)(a[:tlsInSize]))
		}
	}
	if b := tlsBuf(tc, tlsBufOffsets[1]); b.Len() == 0 && b.Cap() > 0 {
		*b = bytes.Buffer{}
	}
}
