package push

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func closedFlag(s *Sender) func() bool {
	return func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closed
	}
}

// TestShutdownWaits: Shutdown refuses new wakes at once and returns only
// when the wakes in flight have finished.
func TestShutdownWaits(t *testing.T) {
	e := newEnv(t)
	e.fcm.hold()
	s := e.start(e.config())
	s.Wake("srv-1", "fcm", e.fcmToken())
	e.fcm.waitArrivals(t, 1)

	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	waitFor(t, "Shutdown to stop admitting", closedFlag(s))
	s.Wake("srv-2", "fcm", e.fcmToken())
	wantCounts(t, s, map[string]float64{"fcm/in_flight_cap": 1})
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a send in flight", err)
	default:
	}
	e.fcm.release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the send finished")
	}
	wantCounts(t, s, map[string]float64{"fcm/sent": 1, "fcm/in_flight_cap": 1})
}

// TestShutdownBounded: when ctx ends first, Shutdown returns its error and
// the sends still in flight are cancelled and counted as failed.
func TestShutdownBounded(t *testing.T) {
	e := newEnv(t)
	e.apns.hold() // released only when the client gives up
	s := e.start(e.config())
	s.Wake("srv-1", "apns", e.apnsToken())
	e.apns.waitArrivals(t, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	settle(s) // the cancelled send returns promptly
	wantCounts(t, s, map[string]float64{"apns/failed": 1})
	logs := e.logs.String()
	if !strings.Contains(logs, "push_shutdown_cancelled") || !strings.Contains(logs, "cause=canceled") {
		t.Errorf("logs lack the cancellation:\n%s", logs)
	}
}

func TestShutdownIdle(t *testing.T) {
	e := newEnv(t)
	s := e.start(e.config())
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Wake("srv-1", "apns", e.apnsToken())
	wantCounts(t, s, map[string]float64{"apns/in_flight_cap": 1})
}
