// Package bufpool recycles the byte buffers that carry messages through the
// relay, so that a forwarded frame costs no allocation in steady state.
//
// A buffer travels with its message: the reader fills it, the router hands it
// to exactly one queue, and the writer releases it after the bytes are on the
// wire. Exactly one owner holds a Buf at any time; Release must be called once
// by the last owner and the Buf must not be touched afterwards.
//
// Buffers come in power-of-two size classes from 512 B to 1 MiB. Larger
// requests are served by a plain allocation that Release leaves to the
// garbage collector, so a rare huge message never pins memory in a pool.
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minShift = 9  // 512 B
	maxShift = 20 // 1 MiB
	classes  = maxShift - minShift + 1
)

// Buf is a pooled byte slice. B always has its full class capacity as its
// length; callers slice it as they need.
type Buf struct {
	B     []byte
	Stamp int64 // when the message in B arrived (unix nanoseconds); 0 if unknown
	class int8  // index into pools, or -1 when not pooled
}

var pools [classes]sync.Pool

func init() {
	for i := range pools {
		size := 1 << (minShift + i)
		class := int8(i)
		pools[i].New = func() any { return &Buf{B: make([]byte, size), class: class} }
	}
}

// classOf returns the smallest class whose size is at least n, or -1 when n
// is larger than the largest class.
func classOf(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	s := bits.Len(uint(n - 1))
	if s > maxShift {
		return -1
	}
	return s - minShift
}

// Get returns a buffer whose B is at least n bytes long. Safe for concurrent use.
func Get(n int) *Buf {
	c := classOf(n)
	if c < 0 {
		return &Buf{B: make([]byte, n), class: -1}
	}
	b := pools[c].Get().(*Buf)
	b.Stamp = 0
	return b
}

// Grow returns a buffer of at least n bytes holding a copy of b.B[:keep],
// releasing b. It is used when a fragmented message outgrows its buffer.
func Grow(b *Buf, keep, n int) *Buf {
	if n <= len(b.B) {
		return b
	}
	nb := Get(n)
	nb.Stamp = b.Stamp
	copy(nb.B, b.B[:keep])
	b.Release()
	return nb
}

// Release returns b to its pool. b must not be used afterwards.
func (b *Buf) Release() {
	if b == nil || b.class < 0 {
		return
	}
	pools[b.class].Put(b)
}
