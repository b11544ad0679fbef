package limits

import (
	"math"
	"net/netip"
	"sync"
	"time"
)

// Bounds on the per-IP bucket map. A bucket that has refilled to full is
// the same as no bucket, so those are dropped by a sweep every sweepEvery.
// A flood of distinct addresses between sweeps is bounded by maxBuckets:
// past it the map is swept at once (at most once a second), and if every
// bucket is still in use an arbitrary one is dropped, which only forgives
// that address its recent upgrades.
const (
	sweepEvery    = 30 * time.Second
	pressureSweep = time.Second
	maxBuckets    = 1 << 18
)

// rateLimiter is a token bucket per key, kept as the time at which the
// bucket will be full again (the generic cell rate algorithm): a request
// is allowed while that time is at most (burst-1) intervals ahead, and each
// allowed request moves it one interval further. Times are nanoseconds
// since the limiter started.
type rateLimiter struct {
	now       func() time.Time
	start     time.Time
	interval  int64 // nanoseconds per token
	tolerance int64 // how far ahead the full time may be and still allow
	max       int

	mu        sync.Mutex
	full      map[netip.Addr]int64 // key -> time its bucket is full again
	nextSweep int64
	lastPress int64
}

func newRateLimiter(rate float64, burst int, now func() time.Time) *rateLimiter {
	interval := int64(math.Ceil(float64(time.Second) / rate))
	if interval < 1 {
		interval = 1
	}
	const limit = int64(1) << 60 // far beyond any uptime, and safe from overflow
	tolerance := limit
	if int64(burst-1) < limit/interval {
		tolerance = int64(burst-1) * interval
	}
	return &rateLimiter{
		now:       now,
		start:     now(),
		interval:  interval,
		tolerance: tolerance,
		max:       maxBuckets,
		full:      make(map[netip.Addr]int64),
		nextSweep: int64(sweepEvery),
		lastPress: -int64(pressureSweep),
	}
}

// allow takes a token from key's bucket and reports whether there was one.
func (rl *rateLimiter) allow(key netip.Addr) bool {
	now := int64(rl.now().Sub(rl.start))
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if now >= rl.nextSweep {
		rl.sweep(now)
		rl.nextSweep = now + int64(sweepEvery)
	}
	t, ok := rl.full[key]
	if t < now {
		t = now
	}
	if t-now > rl.tolerance {
		return false
	}
	if !ok && len(rl.full) >= rl.max {
		rl.makeRoom(now)
	}
	rl.full[key] = t + rl.interval
	return true
}

// sweep drops every bucket that is full again.
func (rl *rateLimiter) sweep(now int64) {
	for k, t := range rl.full {
		if t <= now {
			delete(rl.full, k)
		}
	}
}

// makeRoom brings the map below max before an insert.
func (rl *rateLimiter) makeRoom(now int64) {
	if now-rl.lastPress >= int64(pressureSweep) {
		rl.lastPress = now
		rl.sweep(now)
	}
	for k := range rl.full {
		if len(rl.full) < rl.max {
			break
		}
		delete(rl.full, k)
	}
}

func (rl *rateLimiter) size() int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return len(rl.full)
}
