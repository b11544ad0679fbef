package registry

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

type pset = phoneSet[*phone]

// checkSet compares s with want (conn_id to phone) through every way of
// reading it, and checks which form it is in.
func checkSet(t *testing.T, s *pset, want map[string]*phone) {
	t.Helper()
	if n := s.len(); n != len(want) {
		t.Fatalf("len = %d, want %d", n, len(want))
	}
	for c, p := range want {
		if got, ok := s.get([]byte(c)); !ok || got != p {
			t.Fatalf("get(%s) = %v, %v; want %s", c, got, ok, p.name)
		}
	}
	if got, ok := s.get([]byte("c-missing")); ok {
		t.Fatalf("get(missing) = %s, true", got.name)
	}
	all := make([]*phone, 0, len(want))
	for _, p := range want {
		all = append(all, p)
	}
	if g, w := names(s.appendTo(nil)), names(all); g != w {
		t.Fatalf("appendTo = %s, want %s", g, w)
	}
	switch {
	case len(want) == 0:
		if s.small != nil || s.big != nil {
			t.Fatalf("empty set holds storage: small %d/%d, big %v", len(s.small), cap(s.small), s.big != nil)
		}
	case s.big != nil:
		if s.small != nil {
			t.Fatalf("map form keeps a slice of %d", len(s.small))
		}
	default:
		if len(want) > smallPhones {
			t.Fatalf("%d phones in the slice form", len(want))
		}
		// The array past the slice's length holds no pair: a removed
		// phone must not stay reachable from it.
		full := s.small[:cap(s.small)]
		for i := len(s.small); i < len(full); i++ {
			if full[i] != (phonePair[*phone]{}) {
				t.Fatalf("slot %d past the length holds %s", i, full[i].connID)
			}
		}
	}
}

func TestPhoneSetZero(t *testing.T) {
	var s pset
	checkSet(t, &s, nil)
	if s.remove(connID(0), &phone{name: "x"}) {
		t.Fatal("remove from an empty set reported true")
	}
	if got := s.appendTo(nil); got != nil {
		t.Fatalf("appendTo(nil) of an empty set = %v, want nil", got)
	}
}

func TestPhoneSetFirstPhoneOnePair(t *testing.T) {
	var s pset
	p := &phone{name: "p1"}
	s.put(connID(0), p)
	if s.big != nil || len(s.small) != 1 || cap(s.small) != 1 {
		t.Fatalf("one phone: slice %d/%d, map %v; want a slice of 1/1", len(s.small), cap(s.small), s.big != nil)
	}
	checkSet(t, &s, map[string]*phone{connID(0): p})
}

// TestPhoneSetThreshold fills a set past smallPhones, one phone at a time,
// then empties it in a shuffled order.
func TestPhoneSetThreshold(t *testing.T) {
	const n = 2*smallPhones + 4
	ps := newPhones(n)
	var s pset
	want := map[string]*phone{}
	for i, p := range ps {
		s.put(connID(i), p)
		want[connID(i)] = p
		checkSet(t, &s, want)
		if big := s.big != nil; big != (i+1 > smallPhones) {
			t.Fatalf("%d phones: map form %v", i+1, big)
		}
	}
	order := rand.Perm(n)
	for k, i := range order {
		if !s.remove(connID(i), ps[i]) {
			t.Fatalf("remove(%s) = false", connID(i))
		}
		delete(want, connID(i))
		checkSet(t, &s, want)
		if s.remove(connID(i), ps[i]) {
			t.Fatalf("second remove(%s) = true", connID(i))
		}
		// Once a map, the set stays one until it is empty.
		if left := n - k - 1; left > 0 && s.big == nil {
			t.Fatalf("%d phones left: back in the slice form", left)
		}
	}
}

// filledSet returns a set holding n phones under connID(0..n-1), the
// phones, and what the set should hold.
func filledSet(n int) (pset, []*phone, map[string]*phone) {
	ps := newPhones(n)
	var s pset
	want := map[string]*phone{}
	for i, p := range ps {
		s.put(connID(i), p)
		want[connID(i)] = p
	}
	return s, ps, want
}

// TestPhoneSetRemoveOther checks, in both forms, that a phone that is not
// the one registered under its conn_id removes nothing.
func TestPhoneSetRemoveOther(t *testing.T) {
	for _, n := range []int{1, smallPhones, smallPhones + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s, ps, want := filledSet(n)
			stranger := &phone{name: "stranger"}
			for i := range ps {
				if s.remove(connID(i), stranger) {
					t.Fatalf("remove(%s, stranger) = true", connID(i))
				}
			}
			if s.remove(connID(n), ps[0]) {
				t.Fatal("remove under an unknown conn_id = true")
			}
			checkSet(t, &s, want)
		})
	}
}

// TestPhoneSetReplace checks, in both forms, that putting a phone under a
// conn_id already in use replaces the phone there, and that the replaced
// phone can no longer remove it.
func TestPhoneSetReplace(t *testing.T) {
	for _, n := range []int{1, smallPhones, smallPhones + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s, ps, want := filledSet(n)
			next := &phone{name: "next"}
			s.put(connID(0), next)
			want[connID(0)] = next
			checkSet(t, &s, want)
			if s.remove(connID(0), ps[0]) {
				t.Fatal("the replaced phone removed its successor")
			}
			checkSet(t, &s, want)
		})
	}
}

func TestPhoneSetReset(t *testing.T) {
	for _, n := range []int{1, smallPhones, smallPhones + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var s pset
			for i, p := range newPhones(n) {
				s.put(connID(i), p)
			}
			s.reset()
			checkSet(t, &s, nil)
			p := &phone{name: "again"}
			s.put(connID(0), p)
			checkSet(t, &s, map[string]*phone{connID(0): p})
		})
	}
}

// TestPhoneSetKeys checks lookups of conn_ids that differ only in their
// length, in a byte other than the last, or not at all (the empty one), in
// both forms.
func TestPhoneSetKeys(t *testing.T) {
	keys := []string{"", "a", "ab", "b", "bb", "c-0a", "c-1a", "c-0b"} // smallPhones of them
	misses := []string{"c", "ba", "aa", "c-0c", "c-2a", "c-0a-"}
	for _, fill := range []int{0, 1} {
		t.Run(fmt.Sprint(len(keys)+fill), func(t *testing.T) {
			var s pset
			if _, ok := s.get(nil); ok {
				t.Fatal(`get("") in an empty set = true`)
			}
			want := map[string]*phone{}
			ps := newPhones(len(keys) + fill)
			for i, k := range keys {
				s.put(k, ps[i])
				want[k] = ps[i]
			}
			for i := range fill {
				s.put(connID(i), ps[len(keys)+i])
				want[connID(i)] = ps[len(keys)+i]
			}
			checkSet(t, &s, want)
			for _, k := range misses {
				if p, ok := s.get([]byte(k)); ok {
					t.Fatalf("get(%q) = %s, true", k, p.name)
				}
			}
		})
	}
	var s pset
	p := &phone{name: "empty"}
	s.put("", p)
	if got, ok := s.get(nil); !ok || got != p {
		t.Fatalf(`get("") = %v, %v`, got, ok)
	}
	if _, ok := s.get([]byte("a")); ok {
		t.Fatal(`get("a") with only "" = true`)
	}
}

// TestPhoneSetGetDoesNotAllocate: get is on the per-frame path. The
// conn_id is longer than the 32 bytes a string conversion could use on
// the stack, so a conversion that copied would show.
func TestPhoneSetGetDoesNotAllocate(t *testing.T) {
	for _, n := range []int{1, smallPhones, smallPhones + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var s pset
			var key []byte
			for i, p := range newPhones(n) {
				c := fmt.Sprintf("c-node-with-a-long-name.%016x", i)
				s.put(c, p)
				key = []byte(c)
			}
			if a := testing.AllocsPerRun(100, func() {
				if _, ok := s.get(key); !ok {
					t.Fatal("get missed")
				}
			}); a != 0 {
				t.Fatalf("get allocates %v times", a)
			}
		})
	}
}

// TestPhoneSetAgainstMap runs random operations on a set and on a map
// that does what the registry did before the set, and compares them.
func TestPhoneSetAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const conns = 3 * smallPhones
	ps := newPhones(2 * conns) // two candidates per conn_id
	var s pset
	want := map[string]*phone{}
	for range 20000 {
		i := rng.IntN(conns)
		c, p := connID(i), ps[2*i+rng.IntN(2)]
		switch op := rng.IntN(10); {
		case op < 5:
			s.put(c, p)
			want[c] = p
		case op < 9:
			cur, ok := want[c]
			removed := ok && cur == p
			if removed {
				delete(want, c)
			}
			if got := s.remove(c, p); got != removed {
				t.Fatalf("remove(%s, %s) = %v, want %v", c, p.name, got, removed)
			}
		default:
			s.reset()
			clear(want)
		}
		checkSet(t, &s, want)
	}
}
