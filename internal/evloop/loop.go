package evloop

import (
	"errors"
	"hash/maphash"
	"sync/atomic"
	"time"
)

// ErrUnsupported is returned by NewGroup where there is no event loop.
var ErrUnsupported = errors.New("evloop: not supported on this system")

// Handler is a socket registered with a loop.
type Handler interface {
	// OnEvents is called on the loop with the socket's ready events
	// (EventIn, EventOut, EventErr, EventHup, combined).
	OnEvents(events uint32)
}

// Task is work posted to a loop.
type Task interface {
	RunTask()
}

// BufSize is the size of a loop's shared read buffer.
const BufSize = 64 << 10

// epoch anchors the loops' monotonic clock.
var epoch = time.Now()

// Now returns the loops' clock: monotonic nanoseconds.
func Now() int64 { return int64(time.Since(epoch)) }

// Group is a set of loops; connections are spread over them.
type Group struct {
	loops []*Loop
	next  atomic.Uint32
}

// Pick returns the loop for a new connection (round robin).
func (g *Group) Pick() *Loop {
	return g.loops[int(g.next.Add(1)-1)%len(g.loops)]
}

// ByKey returns the loop for key: every connection with the same key (a
// server-id: a binary and its phones) lands on the same loop, and keys
// spread evenly over the loops.
func (g *Group) ByKey(key string) *Loop {
	return g.loops[maphash.String(keySeed, key)%uint64(len(g.loops))]
}

var keySeed = maphash.MakeSeed()

// Len returns the number of loops.
func (g *Group) Len() int { return len(g.loops) }
