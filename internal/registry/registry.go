// Package registry is the relay's passive store of who holds which
// server-id: one binary per id (first claim wins), up to a limit of phones
// per id, and the grace period that keeps an id's phones after its binary
// goes away.
//
// The registry never does I/O and never calls out while holding a lock.
// It is split into shards by server-id, each with its own lock, so that
// the per-frame Route of one id never contends with traffic of ids in
// other shards (there is no process-wide lock on the data path).
// Operations that displace connections (a reclaim, a takeover, a grace
// expiry) return the displaced phones so that the caller closes them after
// the lock is released.
//
// Identity, not keys: every operation that changes or releases a claim names
// the binary it acts for, and a grace timer carries the generation it was
// armed for. A stale timer or a displaced connection's cleanup can therefore
// never release an id that a newer binary holds.
//
// B and P are the caller's handles for binaries and phones; their zero value
// means "none".
package registry

import (
	"errors"
	"hash/maphash"
	"sync"
	"time"
)

// Errors returned by AddPhone.
var (
	ErrNoServer      = errors.New("registry: no server with that id")
	ErrTooManyPhones = errors.New("registry: too many phones for server-id")
	// ErrUnavailable: the directory cannot answer now (a cluster directory
	// without its coordination service). Never returned by Registry.
	ErrUnavailable = errors.New("registry: directory unavailable")
)

// Outcome is the result of a claim.
type Outcome int

// Claim outcomes.
const (
	Claimed   Outcome = iota // the id was free: the caller holds it
	Reclaimed                // the id was in its grace period: the caller holds it, Evicted lists the old phones
	Conflict                 // a live binary (Incumbent) holds the id: nothing changed
	// Unavailable: the claim cannot be checked now (a cluster directory
	// that lost its coordination service); nothing changed. The in-memory
	// registry never returns it.
	Unavailable
)

// ClaimResult describes a claim.
type ClaimResult[B, P comparable] struct {
	Outcome   Outcome
	Incumbent B   // set for Conflict
	Evicted   []P // phones registered under the id before a reclaim
}

// Registry maps server-ids to their binary and phones. Safe for concurrent use.
type Registry[B, P comparable] struct {
	seed   maphash.Seed
	shards [shardCount]shard[B, P]
}

// shardCount is the number of shards: enough that cores routing frames
// of different ids rarely meet on one lock, few enough that Counts stays
// cheap.
const shardCount = 64

// shard is one lock's worth of ids, padded to its own cache lines.
type shard[B, P comparable] struct {
	mu    sync.RWMutex
	ids   map[string]*entry[B, P] // every id with a live binary or in grace
	grace int                     // entries without a binary
	_     [64]byte
}

type entry[B, P comparable] struct {
	binary B // zero while in the grace period
	gen    uint64
	phones phoneSet[P] // by conn_id
	timer  *time.Timer // the grace timer, while in grace
}

// New returns an empty registry.
func New[B, P comparable]() *Registry[B, P] {
	r := &Registry[B, P]{seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].ids = make(map[string]*entry[B, P])
	}
	return r
}

// shard returns the shard that holds id.
func (r *Registry[B, P]) shard(id string) *shard[B, P] {
	return &r.shards[maphash.String(r.seed, id)%shardCount]
}

// Claim asks for id on behalf of b.
func (r *Registry[B, P]) Claim(id string, b B) ClaimResult[B, P] {
	sh := r.shard(id)
	var zero B
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.ids[id]
	switch {
	case e == nil:
		sh.ids[id] = &entry[B, P]{binary: b, gen: 1}
		return ClaimResult[B, P]{Outcome: Claimed}
	case e.binary != zero:
		return ClaimResult[B, P]{Outcome: Conflict, Incumbent: e.binary}
	}
	sh.grace--
	if e.timer != nil {
		e.timer.Stop() // a fire already under way sees the new generation
		e.timer = nil
	}
	return ClaimResult[B, P]{Outcome: Reclaimed, Evicted: installLocked(e, b)}
}

// TakeOver gives id to b if incumbent still holds it, evicting its phones:
// an atomic "replace the holder if it is still this one", for a claim that
// found the incumbent gone (its connection closing, or silent in a conflict
// probe). ok is false when the id changed hands (or was released)
// meanwhile, and then nothing changed.
func (r *Registry[B, P]) TakeOver(id string, incumbent, b B) (evicted []P, ok bool) {
	sh := r.shard(id)
	var zero B
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.ids[id]
	if e == nil || e.binary == zero || e.binary != incumbent {
		return nil, false
	}
	return installLocked(e, b), true
}

// installLocked makes b the holder of e and returns e's phones. The
// caller holds e's shard lock.
func installLocked[B, P comparable](e *entry[B, P], b B) []P {
	e.binary = b
	e.gen++
	var out []P
	if n := e.phones.len(); n > 0 {
		out = e.phones.appendTo(make([]P, 0, n))
		e.phones.reset()
	}
	return out
}

// Release ends b's hold on id, starting the grace period: the phones stay
// and the id can be reclaimed. When the grace period ends unclaimed, the id
// is removed and expire is called (on a timer goroutine) with its phones.
// With grace <= 0 that happens at once, on the caller's goroutine. Release
// reports whether b held id; if not, nothing changed.
func (r *Registry[B, P]) Release(id string, b B, grace time.Duration, expire func(phones []P)) bool {
	sh := r.shard(id)
	var zero B
	sh.mu.Lock()
	e := sh.ids[id]
	if e == nil || e.binary == zero || e.binary != b {
		sh.mu.Unlock()
		return false
	}
	e.binary = zero
	e.gen++
	sh.grace++
	if grace <= 0 {
		phones := sh.expireLocked(id, e)
		sh.mu.Unlock()
		expire(phones)
		return true
	}
	gen := e.gen
	e.timer = time.AfterFunc(grace, func() {
		sh.mu.Lock()
		if sh.ids[id] != e || e.gen != gen || e.binary != zero {
			sh.mu.Unlock()
			return // reclaimed (or re-armed) since this timer was set
		}
		phones := sh.expireLocked(id, e)
		sh.mu.Unlock()
		expire(phones)
	})
	sh.mu.Unlock()
	return true
}

func (sh *shard[B, P]) expireLocked(id string, e *entry[B, P]) []P {
	delete(sh.ids, id)
	sh.grace--
	e.timer = nil
	out := e.phones.appendTo(make([]P, 0, e.phones.len()))
	e.phones.reset()
	return out
}

// AddPhone registers p under id as connID, allowing at most max phones per
// id. It returns the binary the phone is paired with: zero when the id is in
// its grace period.
func (r *Registry[B, P]) AddPhone(id, connID string, p P, max int) (B, error) {
	sh := r.shard(id)
	var zero B
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.ids[id]
	if e == nil {
		return zero, ErrNoServer
	}
	if e.phones.len() >= max {
		return zero, ErrTooManyPhones
	}
	e.phones.put(connID, p)
	return e.binary, nil
}

// RemovePhone unregisters p (if it is still registered as connID under id)
// and returns the binary that holds id now (zero if none). removed is false
// when p was no longer registered, e.g. after an eviction.
func (r *Registry[B, P]) RemovePhone(id, connID string, p P) (holder B, removed bool) {
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.ids[id]
	if e == nil {
		return holder, false
	}
	return e.binary, e.phones.remove(connID, p)
}

// Route returns the phone registered as connID under id, but only when b is
// the binary holding id: a displaced binary reaches nobody.
func (r *Registry[B, P]) Route(id string, b B, connID []byte) (P, bool) {
	sh := r.shard(id)
	var zero B
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e := sh.ids[id]
	if e == nil || e.binary != b || b == zero {
		var none P
		return none, false
	}
	return e.phones.get(connID)
}

// Holder returns the binary holding id, zero if none.
func (r *Registry[B, P]) Holder(id string) B {
	sh := r.shard(id)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if e := sh.ids[id]; e != nil {
		return e.binary
	}
	var zero B
	return zero
}

// Counts returns how many ids have a live binary and how many are in grace.
func (r *Registry[B, P]) Counts() (live, grace int) {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		live += len(sh.ids) - sh.grace
		grace += sh.grace
		sh.mu.RUnlock()
	}
	return live, grace
}

// State says whether id is known (held by a live binary or in its grace
// period) and which binary holds it (zero in grace).
func (r *Registry[B, P]) State(id string) (holder B, known bool) {
	sh := r.shard(id)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if e := sh.ids[id]; e != nil {
		return e.binary, true
	}
	return holder, false
}

// Drop forgets id whatever its state (the id now belongs elsewhere) and
// returns the binary that held it (zero if none) and its phones. ok is
// false when id was unknown.
func (r *Registry[B, P]) Drop(id string) (holder B, phones []P, ok bool) {
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.ids[id]
	if e == nil {
		return holder, nil, false
	}
	var zero B
	holder = e.binary
	if holder == zero {
		sh.grace--
		if e.timer != nil {
			e.timer.Stop() // a fire under way finds the entry gone
		}
	}
	delete(sh.ids, id)
	phones = e.phones.appendTo(nil)
	e.phones.reset()
	e.gen++
	return holder, phones, true
}

// IDs calls f for every id known (live or in grace) until f returns false.
// f runs without the lock held, on a snapshot of the ids.
func (r *Registry[B, P]) IDs(f func(id string) bool) {
	var ids []string
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		for id := range sh.ids {
			ids = append(ids, id)
		}
		sh.mu.RUnlock()
	}
	for _, id := range ids {
		if !f(id) {
			return
		}
	}
}
