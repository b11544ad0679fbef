package evloop

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The heap must pop timers in deadline order whatever sequence of arms,
// moves and stops built it.
func TestTimerHeapOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var h timerHeap
		timers := make([]*Timer, 1+rng.IntN(64))
		for i := range timers {
			timers[i] = &Timer{}
		}
		for range 4 * len(timers) {
			tm := timers[rng.IntN(len(timers))]
			if rng.IntN(4) == 0 {
				h.remove(tm)
			} else {
				h.set(tm, rng.Int64N(1000))
			}
		}
		var want []int64
		for _, tm := range timers {
			if tm.Armed() {
				want = append(want, tm.When())
			}
		}
		slices.Sort(want)
		var got []int64
		for f := h.first(); f != nil; f = h.first() {
			got = append(got, f.when)
			h.remove(f)
			if f.Armed() {
				t.Fatalf("round %d: removed timer still armed", round)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: popped %v, want %v", round, got, want)
		}
	}
}
