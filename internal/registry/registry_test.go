package registry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Fake handles: pointers give each connection its own identity, nil is "none".
type bin struct{ name string }

type phone struct {
	name  string
	id    string // server-id it joined (used by the hammer)
	conn  string // conn_id it joined as (used by the hammer)
	added atomic.Bool
}

type reg = Registry[*bin, *phone]

const grace = 30 * time.Second // the spec's grace period

// expireRec records calls of a Release expire callback. It is safe to use
// from the timer goroutine.
type expireRec struct {
	mu     sync.Mutex
	calls  int
	phones [][]*phone
}

func (e *expireRec) fn(ps []*phone) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	e.phones = append(e.phones, ps)
}

func (e *expireRec) snapshot() (int, [][]*phone) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls, slices.Clone(e.phones)
}

// names returns the sorted names of ps, for order-independent comparison.
func names(ps []*phone) string {
	s := make([]string, 0, len(ps))
	for _, p := range ps {
		if p == nil {
			s = append(s, "<nil>")
			continue
		}
		s = append(s, p.name)
	}
	slices.Sort(s)
	return "[" + strings.Join(s, " ") + "]"
}

func newPhones(n int) []*phone {
	ps := make([]*phone, n)
	for i := range ps {
		ps[i] = &phone{name: fmt.Sprintf("p%d", i+1)}
	}
	return ps
}

func connID(i int) string { return fmt.Sprintf("c-%016x", i+1) }

func mustClaim(t *testing.T, r *reg, id string, b *bin, want Outcome) ClaimResult[*bin, *phone] {
	t.Helper()
	res := r.Claim(id, b)
	if res.Outcome != want {
		t.Fatalf("Claim(%q, %s) outcome = %v, want %v", id, b.name, res.Outcome, want)
	}
	return res
}

func mustAdd(t *testing.T, r *reg, id, conn string, p *phone, max int, wantBin *bin) {
	t.Helper()
	got, err := r.AddPhone(id, conn, p, max)
	if err != nil {
		t.Fatalf("AddPhone(%q, %q, %s) error = %v", id, conn, p.name, err)
	}
	if got != wantBin {
		t.Fatalf("AddPhone(%q, %q, %s) binary = %v, want %v", id, conn, p.name, got, wantBin)
	}
}

func wantCounts(t *testing.T, r *reg, live, inGrace int) {
	t.Helper()
	l, g := r.Counts()
	if l != live || g != inGrace {
		t.Fatalf("Counts() = (%d, %d), want (%d, %d)", l, g, live, inGrace)
	}
}

func wantHolder(t *testing.T, r *reg, id string, want *bin) {
	t.Helper()
	if got := r.Holder(id); got != want {
		t.Fatalf("Holder(%q) = %v, want %v", id, got, want)
	}
}

func wantRoute(t *testing.T, r *reg, id string, b *bin, conn string, want *phone) {
	t.Helper()
	got, ok := r.Route(id, b, []byte(conn))
	if ok != (want != nil) || got != want {
		t.Fatalf("Route(%q, %v, %q) = (%v, %v), want (%v, %v)", id, b, conn, got, ok, want, want != nil)
	}
}

func TestFirstClaimWins(t *testing.T) {
	r := New[*bin, *phone]()
	b1, b2 := &bin{"b1"}, &bin{"b2"}
	ps := newPhones(2)

	res := mustClaim(t, r, "srv", b1, Claimed)
	if res.Incumbent != nil || res.Evicted != nil {
		t.Fatalf("Claimed result = %+v, want no incumbent and no evicted", res)
	}
	for i, p := range ps {
		mustAdd(t, r, "srv", connID(i), p, 16, b1)
	}

	for _, b := range []*bin{b2, b1} { // a newcomer, and the incumbent claiming again
		res = mustClaim(t, r, "srv", b, Conflict)
		if res.Incumbent != b1 {
			t.Fatalf("Conflict incumbent = %v, want b1", res.Incumbent)
		}
		if res.Evicted != nil {
			t.Fatalf("Conflict evicted = %v, want nil", names(res.Evicted))
		}
	}

	// Nothing changed for the incumbent or its phones.
	wantHolder(t, r, "srv", b1)
	wantCounts(t, r, 1, 0)
	for i, p := range ps {
		wantRoute(t, r, "srv", b1, connID(i), p)
		wantRoute(t, r, "srv", b2, connID(i), nil)
	}
	mustAdd(t, r, "srv", connID(2), &phone{name: "p3"}, 16, b1)

	// Another id is independent.
	mustClaim(t, r, "other", b2, Claimed)
	wantCounts(t, r, 2, 0)
	wantHolder(t, r, "other", b2)
}

func TestReleaseStartsGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1 := &bin{"b1"}
		ps := newPhones(3)
		var exp expireRec

		mustClaim(t, r, "srv", b1, Claimed)
		mustAdd(t, r, "srv", connID(0), ps[0], 16, b1)
		mustAdd(t, r, "srv", connID(1), ps[1], 16, b1)
		wantCounts(t, r, 1, 0)

		if !r.Release("srv", b1, grace, exp.fn) {
			t.Fatal("Release by the holder = false")
		}
		wantCounts(t, r, 0, 1)
		wantHolder(t, r, "srv", nil)

		// Phones stay registered (RemovePhone sees them) but route nowhere.
		wantRoute(t, r, "srv", b1, connID(0), nil)
		wantRoute(t, r, "srv", nil, connID(0), nil)

		// A phone may join during grace; it is paired with no binary.
		mustAdd(t, r, "srv", connID(2), ps[2], 16, nil)

		// Releasing again (already released) reports false and changes nothing.
		if r.Release("srv", b1, grace, exp.fn) {
			t.Fatal("second Release = true")
		}
		wantCounts(t, r, 0, 1)

		time.Sleep(grace / 2)
		synctest.Wait()
		if n, _ := exp.snapshot(); n != 0 {
			t.Fatalf("expire called %d times before grace ended", n)
		}
		if holder, removed := r.RemovePhone("srv", connID(1), ps[1]); holder != nil || !removed {
			t.Fatalf("RemovePhone during grace = (%v, %v), want (nil, true)", holder, removed)
		}
		wantCounts(t, r, 0, 1)
	})
}

func TestReclaimDuringGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		ps := newPhones(3)
		var exp expireRec

		mustClaim(t, r, "srv", b1, Claimed)
		mustAdd(t, r, "srv", connID(0), ps[0], 16, b1)
		mustAdd(t, r, "srv", connID(1), ps[1], 16, b1)
		r.Release("srv", b1, grace, exp.fn)
		time.Sleep(grace / 3)
		mustAdd(t, r, "srv", connID(2), ps[2], 16, nil) // joined during grace

		res := mustClaim(t, r, "srv", b2, Reclaimed)
		if res.Incumbent != nil {
			t.Fatalf("Reclaimed incumbent = %v, want nil", res.Incumbent)
		}
		if got, want := names(res.Evicted), names(ps); got != want {
			t.Fatalf("Reclaimed evicted = %s, want %s", got, want)
		}
		wantHolder(t, r, "srv", b2)
		wantCounts(t, r, 1, 0)

		// A fresh, empty phone set.
		for i, p := range ps {
			wantRoute(t, r, "srv", b2, connID(i), nil)
			if holder, removed := r.RemovePhone("srv", connID(i), p); holder != b2 || removed {
				t.Fatalf("RemovePhone(evicted %s) = (%v, %v), want (b2, false)", p.name, holder, removed)
			}
		}
		fresh := newPhones(16)
		for i, p := range fresh {
			mustAdd(t, r, "srv", connID(100+i), p, 16, b2)
		}
		if _, err := r.AddPhone("srv", connID(200), &phone{name: "x"}, 16); !errors.Is(err, ErrTooManyPhones) {
			t.Fatalf("17th AddPhone after reclaim error = %v, want ErrTooManyPhones", err)
		}
		wantRoute(t, r, "srv", b2, connID(100), fresh[0])
		wantRoute(t, r, "srv", b1, connID(100), nil) // the old binary reaches nobody

		// The old grace timer never fires.
		time.Sleep(2 * grace)
		synctest.Wait()
		if n, _ := exp.snapshot(); n != 0 {
			t.Fatalf("expire called %d times after reclaim", n)
		}
		wantHolder(t, r, "srv", b2)
		wantCounts(t, r, 1, 0)
	})
}

func TestReclaimWithoutPhones(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		var exp expireRec
		mustClaim(t, r, "srv", b1, Claimed)
		r.Release("srv", b1, grace, exp.fn)
		res := mustClaim(t, r, "srv", b2, Reclaimed)
		if len(res.Evicted) != 0 || res.Incumbent != nil {
			t.Fatalf("Reclaimed without phones = %+v, want no evicted, no incumbent", res)
		}
		wantHolder(t, r, "srv", b2)
		wantCounts(t, r, 1, 0)
	})
}

func TestGraceExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1 := &bin{"b1"}
		ps := newPhones(4)
		var exp expireRec

		mustClaim(t, r, "srv", b1, Claimed)
		mustClaim(t, r, "keep", &bin{"k"}, Claimed)
		mustAdd(t, r, "srv", connID(0), ps[0], 16, b1)
		mustAdd(t, r, "srv", connID(1), ps[1], 16, b1)
		mustAdd(t, r, "srv", connID(2), ps[2], 16, b1)
		r.Release("srv", b1, grace, exp.fn)
		mustAdd(t, r, "srv", connID(3), ps[3], 16, nil)                     // joined during grace
		if _, removed := r.RemovePhone("srv", connID(1), ps[1]); !removed { // left during grace
			t.Fatal("RemovePhone during grace: removed = false")
		}
		wantCounts(t, r, 1, 1)

		time.Sleep(grace - time.Nanosecond)
		synctest.Wait()
		if n, _ := exp.snapshot(); n != 0 {
			t.Fatalf("expire called %d times 1ns before grace ended", n)
		}
		wantCounts(t, r, 1, 1)

		time.Sleep(time.Nanosecond)
		synctest.Wait()
		n, got := exp.snapshot()
		if n != 1 {
			t.Fatalf("expire called %d times at grace end, want 1", n)
		}
		if g, w := names(got[0]), names([]*phone{ps[0], ps[2], ps[3]}); g != w {
			t.Fatalf("expire phones = %s, want %s", g, w)
		}
		wantCounts(t, r, 1, 0)
		wantHolder(t, r, "srv", nil)
		if b, err := r.AddPhone("srv", connID(9), &phone{name: "late"}, 16); !errors.Is(err, ErrNoServer) || b != nil {
			t.Fatalf("AddPhone after expiry = (%v, %v), want (nil, ErrNoServer)", b, err)
		}
		if holder, removed := r.RemovePhone("srv", connID(0), ps[0]); holder != nil || removed {
			t.Fatalf("RemovePhone after expiry = (%v, %v), want (nil, false)", holder, removed)
		}
		if r.Release("srv", b1, grace, exp.fn) {
			t.Fatal("Release after expiry = true")
		}

		time.Sleep(10 * grace)
		synctest.Wait()
		if n, _ := exp.snapshot(); n != 1 {
			t.Fatalf("expire called %d times in total, want exactly 1", n)
		}

		// The id is free again: a new claim is a plain Claimed.
		b3 := &bin{"b3"}
		if res := mustClaim(t, r, "srv", b3, Claimed); res.Evicted != nil {
			t.Fatalf("Claimed after expiry evicted %s", names(res.Evicted))
		}
		wantCounts(t, r, 2, 0)
	})
}

func TestGraceExpiryNoPhones(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1 := &bin{"b1"}
		var exp expireRec
		mustClaim(t, r, "srv", b1, Claimed)
		r.Release("srv", b1, grace, exp.fn)
		time.Sleep(grace)
		synctest.Wait()
		n, got := exp.snapshot()
		if n != 1 || len(got[0]) != 0 {
			t.Fatalf("expire = %d calls %v, want 1 call with no phones", n, got)
		}
		wantCounts(t, r, 0, 0)
	})
}

func TestStaleTimerAfterReclaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		var exp1 expireRec

		mustClaim(t, r, "srv", b1, Claimed)
		r.Release("srv", b1, grace, exp1.fn) // timer due at t=30s
		time.Sleep(10 * time.Second)
		mustClaim(t, r, "srv", b2, Reclaimed)
		p := &phone{name: "p"}
		mustAdd(t, r, "srv", connID(0), p, 16, b2)

		time.Sleep(grace) // t=40s: well past the original timer
		synctest.Wait()
		if n, _ := exp1.snapshot(); n != 0 {
			t.Fatalf("stale expire called %d times", n)
		}
		wantHolder(t, r, "srv", b2)
		wantCounts(t, r, 1, 0)
		wantRoute(t, r, "srv", b2, connID(0), p)
	})
}

func TestStaleTimerAfterReclaimAndRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// b1 releases at t=0 (due 30s); b2 reclaims at t=10s and releases at
		// t=20s (due 50s). The first timer must not cut b2's grace short.
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		var exp1, exp2 expireRec

		mustClaim(t, r, "srv", b1, Claimed)
		r.Release("srv", b1, grace, exp1.fn)
		time.Sleep(10 * time.Second)
		mustClaim(t, r, "srv", b2, Reclaimed)
		p := &phone{name: "p"}
		mustAdd(t, r, "srv", connID(0), p, 16, b2)
		time.Sleep(10 * time.Second)
		if !r.Release("srv", b2, grace, exp2.fn) {
			t.Fatal("Release by b2 = false")
		}

		time.Sleep(grace - time.Nanosecond) // t=50s-1ns
		synctest.Wait()
		if n1, _ := exp1.snapshot(); n1 != 0 {
			t.Fatalf("stale expire called %d times", n1)
		}
		if n2, _ := exp2.snapshot(); n2 != 0 {
			t.Fatalf("b2's expire called %d times before its grace ended", n2)
		}
		wantCounts(t, r, 0, 1)

		time.Sleep(time.Nanosecond)
		synctest.Wait()
		n2, got := exp2.snapshot()
		if n2 != 1 || names(got[0]) != "[p]" {
			t.Fatalf("b2's expire = %d calls %v, want 1 call with [p]", n2, got)
		}
		if n1, _ := exp1.snapshot(); n1 != 0 {
			t.Fatalf("stale expire called %d times", n1)
		}
		wantCounts(t, r, 0, 0)
	})
}

func TestDisplacedReleaseDoesNotStartGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		var exp expireRec

		mustClaim(t, r, "srv", b1, Claimed)
		if _, ok := r.TakeOver("srv", b1, b2); !ok {
			t.Fatal("TakeOver = false")
		}
		p := &phone{name: "p"}
		mustAdd(t, r, "srv", connID(0), p, 16, b2)

		for _, g := range []time.Duration{grace, 0} {
			if r.Release("srv", b1, g, exp.fn) {
				t.Fatalf("Release(displaced b1, grace %v) = true", g)
			}
		}
		wantHolder(t, r, "srv", b2)
		wantCounts(t, r, 1, 0)

		time.Sleep(10 * grace)
		synctest.Wait()
		if n, _ := exp.snapshot(); n != 0 {
			t.Fatalf("expire called %d times", n)
		}
		wantHolder(t, r, "srv", b2)
		wantCounts(t, r, 1, 0)
		wantRoute(t, r, "srv", b2, connID(0), p)
	})
}

func TestReleaseByNonHolder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1 := &bin{"b1"}
		var exp expireRec
		if r.Release("nope", b1, grace, exp.fn) {
			t.Fatal("Release of unknown id = true")
		}
		mustClaim(t, r, "srv", b1, Claimed)
		if r.Release("srv", &bin{"stranger"}, grace, exp.fn) {
			t.Fatal("Release by a stranger = true")
		}
		if r.Release("srv", nil, grace, exp.fn) {
			t.Fatal("Release by the zero binary = true")
		}
		time.Sleep(10 * grace)
		synctest.Wait()
		if n, _ := exp.snapshot(); n != 0 {
			t.Fatalf("expire called %d times", n)
		}
		wantHolder(t, r, "srv", b1)
		wantCounts(t, r, 1, 0)
	})
}

func TestReleaseZeroGraceIsSynchronous(t *testing.T) {
	for _, g := range []time.Duration{0, -time.Second} {
		t.Run(g.String(), func(t *testing.T) {
			r := New[*bin, *phone]()
			b1 := &bin{"b1"}
			ps := newPhones(2)
			mustClaim(t, r, "srv", b1, Claimed)
			mustAdd(t, r, "srv", connID(0), ps[0], 16, b1)
			mustAdd(t, r, "srv", connID(1), ps[1], 16, b1)

			// Plain variables: the callback must run on this goroutine before
			// Release returns (the race detector would flag anything else).
			calls := 0
			var got []*phone
			if !r.Release("srv", b1, g, func(p []*phone) { calls++; got = p }) {
				t.Fatal("Release = false")
			}
			if calls != 1 {
				t.Fatalf("expire called %d times before Release returned, want 1", calls)
			}
			if names(got) != names(ps) {
				t.Fatalf("expire phones = %s, want %s", names(got), names(ps))
			}
			wantCounts(t, r, 0, 0)
			wantHolder(t, r, "srv", nil)
			if _, err := r.AddPhone("srv", connID(2), &phone{name: "p3"}, 16); !errors.Is(err, ErrNoServer) {
				t.Fatalf("AddPhone after release = %v, want ErrNoServer", err)
			}
			if res := mustClaim(t, r, "srv", &bin{"b2"}, Claimed); res.Evicted != nil {
				t.Fatalf("Claim after release evicted %s", names(res.Evicted))
			}
		})
	}
}

func TestTakeOver(t *testing.T) {
	t.Run("incumbent holds", func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		ps := newPhones(3)
		mustClaim(t, r, "srv", b1, Claimed)
		for i, p := range ps {
			mustAdd(t, r, "srv", connID(i), p, 3, b1)
		}
		evicted, ok := r.TakeOver("srv", b1, b2)
		if !ok {
			t.Fatal("TakeOver = false")
		}
		if names(evicted) != names(ps) {
			t.Fatalf("TakeOver evicted = %s, want %s", names(evicted), names(ps))
		}
		wantHolder(t, r, "srv", b2)
		wantCounts(t, r, 1, 0)
		for i, p := range ps {
			wantRoute(t, r, "srv", b2, connID(i), nil)
			wantRoute(t, r, "srv", b1, connID(i), nil)
			if holder, removed := r.RemovePhone("srv", connID(i), p); holder != b2 || removed {
				t.Fatalf("RemovePhone(evicted) = (%v, %v), want (b2, false)", holder, removed)
			}
		}
		// The phone set is fresh: the full cap is available again.
		fresh := newPhones(3)
		for i, p := range fresh {
			mustAdd(t, r, "srv", connID(10+i), p, 3, b2)
		}
		wantRoute(t, r, "srv", b2, connID(10), fresh[0])
		wantRoute(t, r, "srv", b1, connID(10), nil)
		if res := mustClaim(t, r, "srv", b1, Conflict); res.Incumbent != b2 {
			t.Fatalf("Conflict incumbent = %v, want b2", res.Incumbent)
		}
	})

	t.Run("no phones", func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		mustClaim(t, r, "srv", b1, Claimed)
		evicted, ok := r.TakeOver("srv", b1, b2)
		if !ok || len(evicted) != 0 {
			t.Fatalf("TakeOver = (%v, %v), want (empty, true)", evicted, ok)
		}
		wantHolder(t, r, "srv", b2)
	})

	t.Run("incumbent released", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := New[*bin, *phone]()
			b1, b2 := &bin{"b1"}, &bin{"b2"}
			p := &phone{name: "p"}
			var exp expireRec
			mustClaim(t, r, "srv", b1, Claimed)
			mustAdd(t, r, "srv", connID(0), p, 16, b1)
			r.Release("srv", b1, grace, exp.fn)

			evicted, ok := r.TakeOver("srv", b1, b2)
			if ok || evicted != nil {
				t.Fatalf("TakeOver after release = (%v, %v), want (nil, false)", names(evicted), ok)
			}
			if _, ok := r.TakeOver("srv", nil, b2); ok {
				t.Fatal("TakeOver naming the zero incumbent during grace = true")
			}
			// Nothing changed: still in grace with its phone.
			wantHolder(t, r, "srv", nil)
			wantCounts(t, r, 0, 1)
			time.Sleep(grace)
			synctest.Wait()
			n, got := exp.snapshot()
			if n != 1 || names(got[0]) != "[p]" {
				t.Fatalf("expire = %d calls %v, want 1 call with [p]", n, got)
			}
		})
	})

	t.Run("after another takeover", func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2, b3 := &bin{"b1"}, &bin{"b2"}, &bin{"b3"}
		mustClaim(t, r, "srv", b1, Claimed)
		if _, ok := r.TakeOver("srv", b1, b2); !ok {
			t.Fatal("first TakeOver = false")
		}
		p := &phone{name: "p"}
		mustAdd(t, r, "srv", connID(0), p, 16, b2)
		evicted, ok := r.TakeOver("srv", b1, b3)
		if ok || evicted != nil {
			t.Fatalf("second TakeOver naming b1 = (%v, %v), want (nil, false)", names(evicted), ok)
		}
		wantHolder(t, r, "srv", b2)
		wantCounts(t, r, 1, 0)
		wantRoute(t, r, "srv", b2, connID(0), p)
	})

	t.Run("expired or unknown id", func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		if _, ok := r.TakeOver("srv", b1, b2); ok {
			t.Fatal("TakeOver of unknown id = true")
		}
		mustClaim(t, r, "srv", b1, Claimed)
		r.Release("srv", b1, 0, func([]*phone) {})
		if _, ok := r.TakeOver("srv", b1, b2); ok {
			t.Fatal("TakeOver of released id = true")
		}
		wantHolder(t, r, "srv", nil)
		wantCounts(t, r, 0, 0)
	})

	t.Run("wrong incumbent", func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		mustClaim(t, r, "srv", b1, Claimed)
		if _, ok := r.TakeOver("srv", &bin{"b1"}, b2); ok { // same name, other identity
			t.Fatal("TakeOver naming a look-alike incumbent = true")
		}
		if _, ok := r.TakeOver("srv", nil, b2); ok {
			t.Fatal("TakeOver naming the zero incumbent = true")
		}
		wantHolder(t, r, "srv", b1)
	})
}

func TestAddPhoneCap(t *testing.T) {
	const max = 16
	r := New[*bin, *phone]()
	b1 := &bin{"b1"}
	mustClaim(t, r, "srv", b1, Claimed)
	ps := newPhones(max)
	for i, p := range ps {
		mustAdd(t, r, "srv", connID(i), p, max, b1)
	}
	extra := &phone{name: "extra"}
	got, err := r.AddPhone("srv", connID(max), extra, max)
	if !errors.Is(err, ErrTooManyPhones) || got != nil {
		t.Fatalf("AddPhone #%d = (%v, %v), want (nil, ErrTooManyPhones)", max+1, got, err)
	}
	wantRoute(t, r, "srv", b1, connID(max), nil) // the refused phone was not registered

	// Removing one frees exactly one slot.
	if holder, removed := r.RemovePhone("srv", connID(3), ps[3]); holder != b1 || !removed {
		t.Fatalf("RemovePhone = (%v, %v), want (b1, true)", holder, removed)
	}
	mustAdd(t, r, "srv", connID(max), extra, max, b1)
	wantRoute(t, r, "srv", b1, connID(max), extra)
	if _, err := r.AddPhone("srv", connID(max+1), &phone{name: "extra2"}, max); !errors.Is(err, ErrTooManyPhones) {
		t.Fatalf("AddPhone after refilling = %v, want ErrTooManyPhones", err)
	}

	// The cap is per id.
	mustClaim(t, r, "other", b1, Claimed)
	mustAdd(t, r, "other", connID(100), &phone{name: "o"}, max, b1)
}

func TestAddPhoneUnknownID(t *testing.T) {
	r := New[*bin, *phone]()
	got, err := r.AddPhone("nope", connID(0), &phone{name: "p"}, 16)
	if !errors.Is(err, ErrNoServer) || got != nil {
		t.Fatalf("AddPhone(unknown) = (%v, %v), want (nil, ErrNoServer)", got, err)
	}
	wantCounts(t, r, 0, 0)
	wantHolder(t, r, "nope", nil)
}

func TestRemovePhone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		p1, p2, p3 := &phone{name: "p1"}, &phone{name: "p2"}, &phone{name: "p3"}
		var exp expireRec

		if holder, removed := r.RemovePhone("nope", connID(0), p1); holder != nil || removed {
			t.Fatalf("RemovePhone(unknown id) = (%v, %v), want (nil, false)", holder, removed)
		}

		mustClaim(t, r, "srv", b1, Claimed)
		mustAdd(t, r, "srv", connID(0), p1, 16, b1)
		mustAdd(t, r, "srv", connID(1), p3, 16, b1)

		// A different phone under the same connID is not removed.
		if holder, removed := r.RemovePhone("srv", connID(0), p2); holder != b1 || removed {
			t.Fatalf("RemovePhone(other phone, same connID) = (%v, %v), want (b1, false)", holder, removed)
		}
		wantRoute(t, r, "srv", b1, connID(0), p1)
		// The right phone under the wrong connID is not removed either.
		if _, removed := r.RemovePhone("srv", connID(1), p1); removed {
			t.Fatal("RemovePhone(p1 under p3's connID) removed = true")
		}
		wantRoute(t, r, "srv", b1, connID(1), p3)

		// Removing twice: true then false.
		if holder, removed := r.RemovePhone("srv", connID(1), p3); holder != b1 || !removed {
			t.Fatalf("RemovePhone = (%v, %v), want (b1, true)", holder, removed)
		}
		if holder, removed := r.RemovePhone("srv", connID(1), p3); holder != b1 || removed {
			t.Fatalf("second RemovePhone = (%v, %v), want (b1, false)", holder, removed)
		}
		wantRoute(t, r, "srv", b1, connID(1), nil)

		// Reclaim evicts p1; a new phone p2 then registers under the same
		// connID. p1's late cleanup must not remove p2, and reports the
		// current holder.
		r.Release("srv", b1, grace, exp.fn)
		res := mustClaim(t, r, "srv", b2, Reclaimed)
		if names(res.Evicted) != "[p1]" {
			t.Fatalf("Reclaimed evicted = %s, want [p1]", names(res.Evicted))
		}
		mustAdd(t, r, "srv", connID(0), p2, 16, b2)
		if holder, removed := r.RemovePhone("srv", connID(0), p1); holder != b2 || removed {
			t.Fatalf("RemovePhone(evicted p1) = (%v, %v), want (b2, false)", holder, removed)
		}
		wantRoute(t, r, "srv", b2, connID(0), p2)
		if holder, removed := r.RemovePhone("srv", connID(0), p2); holder != b2 || !removed {
			t.Fatalf("RemovePhone(p2) = (%v, %v), want (b2, true)", holder, removed)
		}
		wantRoute(t, r, "srv", b2, connID(0), nil)
	})
}

func TestRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2 := &bin{"b1"}, &bin{"b2"}
		p1, p2 := &phone{name: "p1"}, &phone{name: "p2"}
		var exp expireRec

		wantRoute(t, r, "srv", b1, connID(0), nil) // unknown id

		mustClaim(t, r, "srv", b1, Claimed)
		mustClaim(t, r, "other", b2, Claimed)
		mustAdd(t, r, "srv", connID(0), p1, 16, b1)
		mustAdd(t, r, "other", connID(1), p2, 16, b2)

		wantRoute(t, r, "srv", b1, connID(0), p1)
		wantRoute(t, r, "srv", b1, "c-unknown", nil)
		wantRoute(t, r, "srv", b1, "", nil)
		wantRoute(t, r, "srv", b2, connID(0), nil)         // holds another id only
		wantRoute(t, r, "srv", b1, connID(1), nil)         // a phone of another id
		wantRoute(t, r, "other", b1, connID(1), nil)       // not b1's id
		wantRoute(t, r, "srv", &bin{"b1"}, connID(0), nil) // look-alike
		wantRoute(t, r, "srv", nil, connID(0), nil)        // zero binary
		wantRoute(t, r, "unknown", b1, connID(0), nil)     // unknown id
		wantRoute(t, r, "other", b2, connID(1), p2)

		// During grace nobody (in particular not the zero binary) routes.
		r.Release("srv", b1, grace, exp.fn)
		wantRoute(t, r, "srv", b1, connID(0), nil)
		wantRoute(t, r, "srv", nil, connID(0), nil)

		// After a reclaim, only the new holder routes (to phones that joined it).
		b3 := &bin{"b3"}
		mustClaim(t, r, "srv", b3, Reclaimed)
		wantRoute(t, r, "srv", b3, connID(0), nil)
		p3 := &phone{name: "p3"}
		mustAdd(t, r, "srv", connID(2), p3, 16, b3)
		wantRoute(t, r, "srv", b3, connID(2), p3)
		wantRoute(t, r, "srv", b1, connID(2), nil)

		// After a takeover, the displaced binary reaches nobody.
		b4 := &bin{"b4"}
		if _, ok := r.TakeOver("srv", b3, b4); !ok {
			t.Fatal("TakeOver = false")
		}
		p4 := &phone{name: "p4"}
		mustAdd(t, r, "srv", connID(3), p4, 16, b4)
		wantRoute(t, r, "srv", b3, connID(3), nil)
		wantRoute(t, r, "srv", b4, connID(3), p4)
	})
}

func TestHolder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		b1, b2, b3 := &bin{"b1"}, &bin{"b2"}, &bin{"b3"}
		var exp expireRec
		wantHolder(t, r, "srv", nil)
		mustClaim(t, r, "srv", b1, Claimed)
		wantHolder(t, r, "srv", b1)
		mustClaim(t, r, "srv", b2, Conflict)
		wantHolder(t, r, "srv", b1)
		r.TakeOver("srv", b1, b2)
		wantHolder(t, r, "srv", b2)
		r.Release("srv", b2, grace, exp.fn)
		wantHolder(t, r, "srv", nil)
		mustClaim(t, r, "srv", b3, Reclaimed)
		wantHolder(t, r, "srv", b3)
		r.Release("srv", b3, grace, exp.fn)
		time.Sleep(grace)
		synctest.Wait()
		wantHolder(t, r, "srv", nil)
		wantHolder(t, r, "other", nil)
	})
}

func TestCountsLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New[*bin, *phone]()
		a1, a2, b1, c1 := &bin{"a1"}, &bin{"a2"}, &bin{"b1"}, &bin{"c1"}
		var exp expireRec
		nop := func([]*phone) {}

		wantCounts(t, r, 0, 0)
		mustClaim(t, r, "a", a1, Claimed)
		mustClaim(t, r, "b", b1, Claimed)
		mustClaim(t, r, "c", c1, Claimed)
		wantCounts(t, r, 3, 0)
		mustClaim(t, r, "a", a2, Conflict)
		wantCounts(t, r, 3, 0)
		mustAdd(t, r, "a", connID(0), &phone{name: "p"}, 16, a1)
		wantCounts(t, r, 3, 0) // phones do not count

		r.Release("a", a1, grace, exp.fn)
		wantCounts(t, r, 2, 1)
		r.Release("a", a1, grace, exp.fn) // no-op
		wantCounts(t, r, 2, 1)
		r.Release("b", b1, grace, exp.fn)
		wantCounts(t, r, 1, 2)

		mustClaim(t, r, "a", a2, Reclaimed)
		wantCounts(t, r, 2, 1)
		r.TakeOver("a", a2, a1)
		wantCounts(t, r, 2, 1)
		r.TakeOver("b", b1, a1) // fails: b is in grace
		wantCounts(t, r, 2, 1)

		r.Release("c", c1, 0, nop)
		wantCounts(t, r, 1, 1)

		time.Sleep(grace)
		synctest.Wait()
		wantCounts(t, r, 1, 0) // b expired
		if n, _ := exp.snapshot(); n != 1 {
			t.Fatalf("expire calls = %d, want 1 (b only)", n)
		}

		r.Release("a", a1, grace, exp.fn)
		wantCounts(t, r, 0, 1)
		time.Sleep(grace)
		synctest.Wait()
		wantCounts(t, r, 0, 0)
		if n, _ := exp.snapshot(); n != 2 {
			t.Fatalf("expire calls = %d, want 2", n)
		}
	})
}

// TestConcurrentHammer drives the registry from many goroutines (run it
// under -race) and then checks the invariants: every phone that was ever
// registered is accounted for exactly once (removed, evicted by a reclaim or
// takeover, or expired), never under the wrong id, nothing is left behind,
// and Route only ever returns the phone registered under the asked connID.
func TestConcurrentHammer(t *testing.T) {
	const (
		workers   = 16
		iters     = 400
		maxPhones = 4
	)
	ids := []string{"s0", "s1", "s2"}
	r := New[*bin, *phone]()

	var (
		mu        sync.Mutex
		accounted = map[*phone]string{}
		added     atomic.Int64
		nextConn  atomic.Int64
	)
	account := func(ps []*phone, id, how string) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range ps {
			if p == nil {
				t.Errorf("%s on %s: nil phone", how, id)
				continue
			}
			if p.id != id {
				t.Errorf("%s on %s: phone %s belongs to %s", how, id, p.name, p.id)
			}
			if prev, dup := accounted[p]; dup {
				t.Errorf("phone %s accounted twice: %s then %s", p.name, prev, how)
			}
			accounted[p] = how
		}
	}
	expireFor := func(id string) func([]*phone) {
		return func(ps []*phone) { account(ps, id, "expired") }
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 0x5eed))
			held := map[string]*bin{}
			var mine []*phone
			release := func(id string, b *bin) {
				var g time.Duration
				if rng.IntN(4) > 0 {
					g = time.Duration(rng.IntN(200)) * time.Microsecond
				}
				r.Release(id, b, g, expireFor(id)) // false when displaced: fine
				delete(held, id)
			}
			for i := range iters {
				id := ids[rng.IntN(len(ids))]
				switch op := rng.IntN(10); {
				case op < 2: // claim, possibly followed by a takeover
					if _, ok := held[id]; ok {
						continue
					}
					b := &bin{name: fmt.Sprintf("w%d-%d", w, i)}
					res := r.Claim(id, b)
					switch res.Outcome {
					case Claimed:
						if res.Incumbent != nil || len(res.Evicted) != 0 {
							t.Errorf("Claimed with %+v", res)
						}
						held[id] = b
					case Reclaimed:
						if res.Incumbent != nil {
							t.Errorf("Reclaimed with incumbent %v", res.Incumbent)
						}
						account(res.Evicted, id, "reclaimed")
						held[id] = b
					case Conflict:
						if res.Incumbent == nil || res.Incumbent == b || res.Evicted != nil {
							t.Errorf("Conflict with %+v", res)
						}
						if rng.IntN(3) == 0 {
							if ev, ok := r.TakeOver(id, res.Incumbent, b); ok {
								account(ev, id, "taken over")
								held[id] = b
							} else if ev != nil {
								t.Errorf("failed TakeOver returned phones %s", names(ev))
							}
						}
					default:
						t.Errorf("Claim outcome %v", res.Outcome)
					}
				case op < 3: // release
					if b, ok := held[id]; ok {
						release(id, b)
					}
				case op < 6: // add a phone
					n := nextConn.Add(1)
					p := &phone{name: fmt.Sprintf("p%d", n), id: id, conn: fmt.Sprintf("c-%016x", n)}
					_, err := r.AddPhone(id, p.conn, p, maxPhones)
					switch {
					case err == nil:
						p.added.Store(true)
						added.Add(1)
						mine = append(mine, p)
					case errors.Is(err, ErrNoServer), errors.Is(err, ErrTooManyPhones):
					default:
						t.Errorf("AddPhone error %v", err)
					}
				case op < 8: // remove one of my phones
					if len(mine) == 0 {
						continue
					}
					k := rng.IntN(len(mine))
					p := mine[k]
					mine = slices.Delete(mine, k, k+1)
					if _, removed := r.RemovePhone(p.id, p.conn, p); removed {
						account([]*phone{p}, p.id, "removed")
					}
				default: // route, as the holder or as a random binary
					var conn string
					if len(mine) > 0 && rng.IntN(4) > 0 {
						conn = mine[rng.IntN(len(mine))].conn
					} else {
						conn = fmt.Sprintf("c-%016x", rng.Int64N(nextConn.Load()+1))
					}
					b := held[id]
					if b == nil {
						b = r.Holder(id) // may be nil or stale by the time we route
					}
					if p, ok := r.Route(id, b, []byte(conn)); ok {
						if b == nil {
							t.Errorf("Route with zero binary found %s", p.name)
						} else if p == nil || p.conn != conn || p.id != id {
							t.Errorf("Route(%s, %s) = %v", id, conn, p)
						}
					} else if p != nil {
						t.Errorf("Route miss returned %s", p.name)
					}
				}
			}
			for id, b := range held {
				release(id, b)
			}
		})
	}
	wg.Wait()

	// Every holder released at the end, so no id has a live binary.
	if live, _ := r.Counts(); live != 0 {
		t.Fatalf("after all binaries released: live = %d, want 0", live)
	}
	// Drain whatever is still in grace: reclaim and release at once.
	final := &bin{"final"}
	for _, id := range ids {
		res := r.Claim(id, final)
		switch res.Outcome {
		case Claimed:
		case Reclaimed:
			account(res.Evicted, id, "drain reclaim")
		default:
			t.Fatalf("drain Claim(%s) = %+v", id, res)
		}
		if !r.Release(id, final, 0, expireFor(id)) {
			t.Fatalf("drain Release(%s) = false", id)
		}
		wantHolder(t, r, id, nil)
	}
	wantCounts(t, r, 0, 0)

	// An expiry that fired just before the drain may still be delivering its
	// phones (expire runs after the lock is released); wait for it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(accounted)
		mu.Unlock()
		if int64(n) == added.Load() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d phones added, %d accounted for", added.Load(), n)
		}
		runtime.Gosched()
	}
	mu.Lock()
	defer mu.Unlock()
	for p, how := range accounted {
		if !p.added.Load() {
			t.Errorf("phone %s %s but its AddPhone failed", p.name, how)
		}
	}
	if added.Load() == 0 {
		t.Fatal("hammer registered no phones")
	}
	kinds := map[string]int{}
	for _, how := range accounted {
		kinds[how]++
	}
	t.Logf("%d phones registered and accounted for: %v", added.Load(), kinds)
}

// BenchmarkRoute routes frames of one id to its phones in turn. An id
// with one phone is the common case; 8 is the most a set keeps in its
// slice form, and 16 (the default cap) is past it, in the map form.
func BenchmarkRoute(b *testing.B) {
	for _, n := range []int{1, 8, 16} {
		b.Run(fmt.Sprintf("phones=%d", n), func(b *testing.B) {
			r := New[*bin, *phone]()
			const id = "0b7c8a8e-1f5e-4a63-9d53-2f8f7b3c6a11"
			holder := &bin{"b1"}
			r.Claim(id, holder)
			conns := make([][]byte, n)
			for i := range conns {
				c := connID(i)
				conns[i] = []byte(c)
				if _, err := r.AddPhone(id, c, &phone{name: c}, 16); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p, ok := r.Route(id, holder, conns[i])
				if !ok || p == nil {
					b.Fatal("Route missed")
				}
				if i++; i == n {
					i = 0
				}
			}
		})
	}
}

// BenchmarkRouteParallel routes frames of many ids from every core at
// once, as binaries on several event loops do. Run it with -cpu 1,2,4,8:
// ns/op should fall as cores are added (no process-wide lock), where one
// shared lock would keep it flat or make it rise.
func BenchmarkRouteParallel(b *testing.B) {
	r := New[*bin, *phone]()
	const ids = 1024
	type idState struct {
		id     string
		holder *bin
		conns  [][]byte
	}
	all := make([]idState, ids)
	for i := range all {
		st := &all[i]
		st.id = fmt.Sprintf("id-%04d", i)
		st.holder = &bin{st.id}
		r.Claim(st.id, st.holder)
		for k := range 4 {
			c := connID(k)
			st.conns = append(st.conns, []byte(c))
			if _, err := r.AddPhone(st.id, c, &phone{name: c}, 16); err != nil {
				b.Fatal(err)
			}
		}
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(next.Add(1), 7))
		for pb.Next() {
			st := &all[rng.IntN(ids)]
			if p, ok := r.Route(st.id, st.holder, st.conns[rng.IntN(4)]); !ok || p == nil {
				b.Fatal("Route missed")
			}
		}
	})
}
