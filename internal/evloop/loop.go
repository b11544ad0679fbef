package evloop

import (
	"errors"
	"sync"
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

// Slot is a socket's registration with a loop: an index into the loop's
// table of handlers, carried in the epoll event. The table is dense (it
// holds the loop's own sockets, not one entry per descriptor number of
// the process), so that many loops do not each keep a table as large as
// the highest descriptor.
type Slot int32

// BufSize is the size of a loop's shared read buffer.
const BufSize = 1 << 20

// epoch anchors the loops' monotonic clock.
var epoch = time.Now()

// Now returns the loops' clock: monotonic nanoseconds.
func Now() int64 { return int64(time.Since(epoch)) }

// Group is a set of loops; connections are spread over them.
type Group struct {
	loops []*Loop
	next  atomic.Uint32

	pmu    sync.Mutex
	placed map[string]*Placement // by key, while connections hold it
	load   []int                 // placed connections per loop
}

// Pick returns the loop for a new connection (round robin).
func (g *Group) Pick() *Loop {
	return g.loops[int(g.next.Add(1)-1)%len(g.loops)]
}

// Place returns the loop for a connection with key (a server-id): the
// loop every other connection placed with that key and not yet Unplaced is
// on (a binary and its phones share a loop), or, for a key with none, the
// loop with the fewest placed connections. A hash would do without the
// table but spreads a few keys badly: four ids on two loops land three to
// one or four to none half the time, and one loop then does most of the
// work. The table costs one entry per key in use. The Placement is what
// the connection gives back to Unplace when it ends.
func (g *Group) Place(key string) (*Loop, *Placement) {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	if g.placed == nil {
		g.placed = make(map[string]*Placement)
		g.load = make([]int, len(g.loops))
	}
	p := g.placed[key]
	if p == nil {
		best := 0
		for i, n := range g.load {
			if n < g.load[best] {
				best = i
			}
		}
		p = &Placement{key: key, loop: int32(best)}
		g.placed[key] = p
	}
	p.n++
	g.load[p.loop]++
	return g.loops[p.loop], p
}

// Unplace gives back one Place, once its connection has ended; nil is
// ignored.
func (g *Group) Unplace(p *Placement) {
	if p == nil {
		return
	}
	g.pmu.Lock()
	defer g.pmu.Unlock()
	g.load[p.loop]--
	if p.n--; p.n == 0 {
		delete(g.placed, p.key)
	}
}

// Placement is a key's loop and how many connections hold it there
// (Group.pmu).
type Placement struct {
	key     string
	loop, n int32 // 24 bytes, not 32: one per server-id in use
}

// Len returns the number of loops.
func (g *Group) Len() int { return len(g.loops) }
