package main

import (
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// A burst of accepts lowers GOGC until a second passes at less than half
// the burst's pace; slower accepts never touch it.
func TestGCBurst(t *testing.T) {
	now := time.Unix(1000, 0)
	gogc := 100
	var pending func()
	var logged []string
	g := &gcBurst{
		log:   func(msg string, _ ...any) { logged = append(logged, msg) },
		set:   func(v int) int { old := gogc; gogc = v; return old },
		now:   func() time.Time { return now },
		after: func(_ time.Duration, f func()) { pending = f },
	}
	accept := func(n int, over time.Duration) {
		for range n {
			g.note()
			now = now.Add(over / time.Duration(n))
		}
	}
	tick := func() {
		t.Helper()
		if pending == nil {
			t.Fatal("no check is armed")
		}
		f := pending
		pending = nil
		f()
	}

	accept(burstAccepts-10, 1100*time.Millisecond) // under the pace
	accept(burstAccepts-10, 1100*time.Millisecond)
	if gogc != 100 || pending != nil {
		t.Fatalf("below the pace: GOGC %d", gogc)
	}

	accept(burstAccepts, 500*time.Millisecond)
	if gogc != burstGOGC || pending == nil {
		t.Fatalf("in a burst: GOGC %d", gogc)
	}
	accept(burstAccepts, time.Second) // the burst goes on
	tick()
	if gogc != burstGOGC {
		t.Fatalf("burst still going: GOGC %d", gogc)
	}
	accept(burstAccepts/2-1, time.Second) // slows down
	tick()
	if gogc != 100 || pending != nil {
		t.Fatalf("after the burst: GOGC %d, check armed %v", gogc, pending != nil)
	}

	// A second burst switches again, and restores what was set before it.
	gogc = 80
	accept(burstAccepts, 100*time.Millisecond)
	now = now.Add(5 * time.Second)
	tick()
	if gogc != 80 {
		t.Fatalf("restored GOGC %d, want 80", gogc)
	}
	if want := "[reconnect_storm_started reconnect_storm_ended reconnect_storm_started reconnect_storm_ended]"; fmt.Sprint(logged) != want {
		t.Errorf("logged %v, want %s", logged, want)
	}
}

// An operator's GOGC is left alone.
func TestGCBurstRespectsGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	if newGCBurst(slog.New(slog.DiscardHandler)) != nil {
		t.Fatal("a GOGC set by the operator would be overridden")
	}
}
