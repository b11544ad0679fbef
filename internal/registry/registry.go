// Package registry is the relay's passive store of who holds which
// server-id: one binary per id (first claim wins), up to a limit of phones
// per id, and the grace period that keeps an id's phones after its binary
// goes away.
//
// The registry never does I/O and never calls out while holding its lock.
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
	mu    sync.RWMutex
	ids   map[string]*entry[B, P] // every id with a live binary or in grace
	grace int                     // entries without a binary
}

type entry[B, P comparable] struct {
	binary B // zero while in the grace period
	gen    uint64
	phones map[string]P
	timer  *time.Timer // the grace timer, while in grace
}

// New returns an empty registry.
func New[B, P comparable]() *Registry[B, P] {
	return &Registry[B, P]{ids: make(map[string]*entry[B, P])}
}

// Claim asks for id on behalf of b.
func (r *Registry[B, P]) Claim(id string, b B) ClaimResult[B, P] {
	var zero B
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.ids[id]
	switch {
	case e == nil:
		r.ids[id] = &entry[B, P]{binary: b, gen: 1}
		return ClaimResult[B, P]{Outcome: Claimed}
	case e.binary != zero:
		return ClaimResult[B, P]{Outcome: Conflict, Incumbent: e.binary}
	}
	r.grace--
	if e.timer != nil {
		e.timer.Stop() // a fire already under way sees the new generation
		e.timer = nil
	}
	return ClaimResult[B, P]{Outcome: Reclaimed, Evicted: r.installLocked(e, b)}
}

// TakeOver gives id to b if incumbent still holds it, evicting its phones:
// an atomic "replace the holder if it is still this one", for a claim that
// found the incumbent gone (its connection closing, or silent in a conflict
// probe). ok is false when the id changed hands (or was released)
// meanwhile, and then nothing changed.
func (r *Registry[B, P]) TakeOver(id string, incumbent, b B) (evicted []P, ok bool) {
	var zero B
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.ids[id]
	if e == nil || e.binary == zero || e.binary != incumbent {
		return nil, false
	}
	return r.installLocked(e, b), true
}

// installLocked makes b the holder of e and returns e's phones.
func (r *Registry[B, P]) installLocked(e *entry[B, P], b B) []P {
	e.binary = b
	e.gen++
	var out []P
	if len(e.phones) > 0 {
		out = make([]P, 0, len(e.phones))
		for _, p := range e.phones {
			out = append(out, p)
		}
		e.phones = nil
	}
	return out
}

// Release ends b's hold on id, starting the grace period: the phones stay
// and the id can be reclaimed. When the grace period ends unclaimed, the id
// is removed and expire is called (on a timer goroutine) with its phones.
// With grace <= 0 that happens at once, on the caller's goroutine. Release
// reports whether b held id; if not, nothing changed.
func (r *Registry[B, P]) Release(id string, b B, grace time.Duration, expire func(phones []P)) bool {
	var zero B
	r.mu.Lock()
	e := r.ids[id]
	if e == nil || e.binary == zero || e.binary != b {
		r.mu.Unlock()
		return false
	}
	e.binary = zero
	e.gen++
	r.grace++
	if grace <= 0 {
		phones := r.expireLocked(id, e)
		r.mu.Unlock()
		expire(phones)
		return true
	}
	gen := e.gen
	e.timer = time.AfterFunc(grace, func() {
		r.mu.Lock()
		if r.ids[id] != e || e.gen != gen || e.binary != zero {
			r.mu.Unlock()
			return // reclaimed (or re-armed) since this timer was set
		}
		phones := r.expireLocked(id, e)
		r.mu.Unlock()
		expire(phones)
	})
	r.mu.Unlock()
	return true
}

func (r *Registry[B, P]) expireLocked(id string, e *entry[B, P]) []P {
	delete(r.ids, id)
	r.grace--
	e.timer = nil
	out := make([]P, 0, len(e.phones))
	for _, p := range e.phones {
		out = append(out, p)
	}
	e.phones = nil
	return out
}

// AddPhone registers p under id as connID, allowing at most max phones per
// id. It returns the binary the phone is paired with: zero when the id is in
// its grace period.
func (r *Registry[B, P]) AddPhone(id, connID string, p P, max int) (B, error) {
	var zero B
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.ids[id]
	if e == nil {
		return zero, ErrNoServer
	}
	if len(e.phones) >= max {
		return zero, ErrTooManyPhones
	}
	if e.phones == nil {
		e.phones = make(map[string]P)
	}
	e.phones[connID] = p
	return e.binary, nil
}

// RemovePhone unregisters p (if it is still registered as connID under id)
// and returns the binary that holds id now (zero if none). removed is false
// when p was no longer registered, e.g. after an eviction.
func (r *Registry[B, P]) RemovePhone(id, connID string, p P) (holder B, removed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.ids[id]
	if e == nil {
		return holder, false
	}
	if cur, ok := e.phones[connID]; ok && cur == p {
		delete(e.phones, connID)
		removed = true
	}
	return e.binary, removed
}

// Route returns the phone registered as connID under id, but only when b is
// the binary holding id: a displaced binary reaches nobody.
func (r *Registry[B, P]) Route(id string, b B, connID []byte) (P, bool) {
	var zero B
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.ids[id]
	if e == nil || e.binary != b || b == zero {
		var none P
		return none, false
	}
	p, ok := e.phones[string(connID)]
	return p, ok
}

// Holder returns the binary holding id, zero if none.
func (r *Registry[B, P]) Holder(id string) B {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.ids[id]; e != nil {
		return e.binary
	}
	var zero B
	return zero
}

// Counts returns how many ids have a live binary and how many are in grace.
func (r *Registry[B, P]) Counts() (live, grace int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.ids) - r.grace, r.grace
}

// State says whether id is known (held by a live binary or in its grace
// period) and which binary holds it (zero in grace).
func (r *Registry[B, P]) State(id string) (holder B, known bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.ids[id]; e != nil {
		return e.binary, true
	}
	return holder, false
}

// Drop forgets id whatever its state (the id now belongs elsewhere) and
// returns the binary that held it (zero if none) and its phones. ok is
// false when id was unknown.
func (r *Registry[B, P]) Drop(id string) (holder B, phones []P, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.ids[id]
	if e == nil {
		return holder, nil, false
	}
	var zero B
	holder = e.binary
	if holder == zero {
		r.grace--
		if e.timer != nil {
			e.timer.Stop() // a fire under way finds the entry gone
		}
	}
	delete(r.ids, id)
	for _, p := range e.phones {
		phones = append(phones, p)
	}
	e.phones = nil
	e.gen++
	return holder, phones, true
}

// IDs calls f for every id known (live or in grace) until f returns false.
// f runs without the lock held, on a snapshot of the ids.
func (r *Registry[B, P]) IDs(f func(id string) bool) {
	r.mu.RLock()
	ids := make([]string, 0, len(r.ids))
	for id := range r.ids {
		ids = append(ids, id)
	}
	r.mu.RUnlock()
	for _, id := range ids {
		if !f(id) {
			return
		}
	}
}
