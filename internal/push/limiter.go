package push

import "time"

// buckets is a token bucket per server-id, kept as the generic cell rate
// algorithm: for each id only the time at which its bucket will be full
// again. A bucket that is full again is indistinguishable from a new one,
// so it is deleted; the map holds only ids that woke recently.
//
// buckets is not safe for concurrent use; the Sender guards it.
type buckets struct {
	burst     int
	refill    time.Duration
	full      map[string]time.Time // when each id's bucket is full again
	nextSweep time.Time
}

func newBuckets(burst int, refill time.Duration) buckets {
	return buckets{burst: burst, refill: refill, full: make(map[string]time.Time)}
}

// allow takes one token from id's bucket at now, reporting whether there
// was one.
func (b *buckets) allow(id string, now time.Time) bool {
	b.sweep(now)
	t, ok := b.full[id]
	if !ok || t.Before(now) {
		t = now
	}
	next := t.Add(b.refill)
	if next.Sub(now) > time.Duration(b.burst)*b.refill {
		return false
	}
	b.full[id] = next
	return true
}

// sweep deletes the buckets that are full again, at most once per
// burst*refill (the time an empty bucket takes to fill), so an id that
// stopped waking is gone within twice that.
func (b *buckets) sweep(now time.Time) {
	if now.Before(b.nextSweep) {
		return
	}
	for id, t := range b.full {
		if !t.After(now) {
			delete(b.full, id)
		}
	}
	b.nextSweep = now.Add(time.Duration(b.burst) * b.refill)
}
