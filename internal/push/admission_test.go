package push

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRateLimit: a server-id gets Burst wakes, then one per Refill; the
// refused ones are counted at once, without a request. Other ids are not
// affected.
func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	c := e.config()
	c.Burst = 3
	c.Refill = 10 * time.Second
	s := e.start(c)
	for range 3 {
		s.Wake("srv-a", "fcm", e.fcmToken())
	}
	s.Wake("srv-a", "apns", e.apnsToken()) // one bucket for both platforms
	wantCounts(t, s, map[string]float64{"apns/rate_limited": 1})
	s.Wake("srv-b", "apns", e.apnsToken())
	settle(s)
	wantCounts(t, s, map[string]float64{"fcm/sent": 3, "apns/sent": 1, "apns/rate_limited": 1})

	e.clock.Advance(10*time.Second - time.Millisecond)
	s.Wake("srv-a", "fcm", e.fcmToken())
	e.clock.Advance(time.Millisecond)
	s.Wake("srv-a", "fcm", e.fcmToken())
	s.Wake("srv-a", "fcm", e.fcmToken())
	settle(s)
	wantCounts(t, s, map[string]float64{"fcm/sent": 4, "fcm/rate_limited": 2, "apns/sent": 1, "apns/rate_limited": 1})

	e.clock.Advance(30 * time.Second) // full again
	for range 3 {
		s.Wake("srv-a", "fcm", e.fcmToken())
	}
	s.Wake("srv-a", "fcm", e.fcmToken())
	settle(s)
	wantCounts(t, s, map[string]float64{"fcm/sent": 7, "fcm/rate_limited": 3, "apns/sent": 1, "apns/rate_limited": 1})
	if hits, _ := e.fcm.stats(); hits != 7 {
		t.Errorf("FCM requests = %d, want 7", hits)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "outcome=rate_limited") {
		t.Errorf("no rate_limited event in logs:\n%s", logs)
	}
}

func TestBuckets(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newBuckets(6, 10*time.Second)
	for i := range 6 {
		if !b.allow("a", t0) {
			t.Fatalf("wake %d refused", i+1)
		}
	}
	if b.allow("a", t0) || b.allow("a", t0.Add(9*time.Second)) {
		t.Fatal("wake 7 allowed before a refill")
	}
	if !b.allow("a", t0.Add(10*time.Second)) || b.allow("a", t0.Add(10*time.Second)) {
		t.Fatal("want exactly one wake after one refill")
	}
	if !b.allow("a", t0.Add(25*time.Second)) || b.allow("a", t0.Add(25*time.Second)) {
		t.Fatal("want exactly one wake after 1.5 refills")
	}
}

// TestBucketsBounded: buckets that are full again are dropped, so the map
// holds only ids that woke within the last two fill periods.
func TestBucketsBounded(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newBuckets(6, 10*time.Second)
	for i := range 1000 {
		b.allow(fmt.Sprint("id-", i), t0)
	}
	b.allow("busy", t0.Add(50*time.Second))
	for range 6 {
		b.allow("busy", t0.Add(59*time.Second))
	}
	if len(b.full) != 1001 {
		t.Fatalf("%d buckets before the sweep is due", len(b.full))
	}
	b.allow("new", t0.Add(60*time.Second)) // one fill period after the first sweep
	if len(b.full) != 2 {
		t.Fatalf("%d buckets after the sweep, want 2 (busy, new)", len(b.full))
	}
	b.allow("later", t0.Add(200*time.Second))
	if len(b.full) != 1 {
		t.Fatalf("%d buckets, want 1", len(b.full))
	}
	// A swept id starts again with a full bucket.
	for i := range 6 {
		if !b.allow("id-1", t0.Add(200*time.Second)) {
			t.Fatalf("wake %d of a new bucket refused", i+1)
		}
	}
}

// TestSenderBucketsBounded checks the same through the Sender.
func TestSenderBucketsBounded(t *testing.T) {
	e := newEnv(t)
	c := e.config()
	c.MaxInFlight = 1000
	s := e.start(c)
	for i := range 50 {
		s.Wake(fmt.Sprint("srv-", i), "apns", e.apnsToken())
	}
	settle(s)
	e.clock.Advance(60 * time.Second)
	s.Wake("srv-last", "apns", e.apnsToken())
	settle(s)
	s.mu.Lock()
	n := len(s.buckets.full)
	s.mu.Unlock()
	if n != 1 {
		t.Errorf("%d buckets kept, want 1", n)
	}
	wantCounts(t, s, map[string]float64{"apns/sent": 51})
}

// TestInFlightCap: wakes over the relay-wide cap are dropped at once; Wake
// does not block while the sends in flight are stuck.
func TestInFlightCap(t *testing.T) {
	e := newEnv(t)
	e.fcm.hold()
	e.apns.hold()
	c := e.config()
	c.MaxInFlight = 2
	s := e.start(c)
	s.Wake("srv-1", "fcm", e.fcmToken())
	s.Wake("srv-2", "apns", e.apnsToken())
	s.Wake("srv-3", "fcm", e.fcmToken())
	s.Wake("srv-4", "apns", e.apnsToken())
	wantCounts(t, s, map[string]float64{"fcm/in_flight_cap": 1, "apns/in_flight_cap": 1})
	e.fcm.waitArrivals(t, 1)
	e.apns.waitArrivals(t, 1)
	e.fcm.release()
	e.apns.release()
	settle(s)
	s.Wake("srv-3", "fcm", e.fcmToken()) // a slot is free again
	settle(s)
	wantCounts(t, s, map[string]float64{"fcm/sent": 2, "apns/sent": 1, "fcm/in_flight_cap": 1, "apns/in_flight_cap": 1})
}

// TestCapDoesNotSpendTokens: a wake refused by the in-flight cap leaves
// the server-id's bucket alone.
func TestCapDoesNotSpendTokens(t *testing.T) {
	e := newEnv(t)
	e.apns.hold()
	c := e.config()
	c.MaxInFlight = 1
	c.Burst = 2
	s := e.start(c)
	s.Wake("srv-1", "apns", e.apnsToken())
	for range 5 {
		s.Wake("srv-1", "apns", e.apnsToken())
	}
	e.apns.waitArrivals(t, 1)
	e.apns.release()
	settle(s)
	s.Wake("srv-1", "apns", e.apnsToken())
	settle(s)
	wantCounts(t, s, map[string]float64{"apns/sent": 2, "apns/in_flight_cap": 5})
}

// TestOff: a platform without credentials drops and counts its wakes.
func TestOff(t *testing.T) {
	e := newEnv(t)
	s := e.start(Config{Log: e.logger()})
	s.Wake("srv-1", "fcm", e.fcmToken())
	s.Wake("srv-1", "apns", e.apnsToken())
	s.Wake("srv-1", "apns", e.apnsToken())
	s.Wake("srv-1", "web", "tok") // not a platform: ignored, no series for it
	wantCounts(t, s, map[string]float64{"fcm/off": 1, "apns/off": 2})

	c := e.config()
	c.APNsKey, c.APNsKeyID, c.APNsTeamID, c.APNsTopic = nil, "", "", ""
	s2 := e.start(c)
	s2.Wake("srv-1", "apns", e.apnsToken())
	s2.Wake("srv-1", "fcm", e.fcmToken())
	settle(s2)
	wantCounts(t, s2, map[string]float64{"apns/off": 1, "fcm/sent": 1})
	if hits, _ := e.apns.stats(); hits != 0 {
		t.Errorf("APNs requests = %d, want 0", hits)
	}
}

// TestOversizedToken: a token no service would accept is refused without
// a request.
func TestOversizedToken(t *testing.T) {
	e := newEnv(t)
	s := e.start(e.config())
	s.Wake("srv-1", "fcm", strings.Repeat("x", 5000))
	s.Wake("srv-1", "apns", "")
	wantCounts(t, s, map[string]float64{"fcm/rejected": 1, "apns/rejected": 1})
	if hits, _ := e.fcm.stats(); hits != 0 {
		t.Errorf("FCM requests = %d", hits)
	}
}

// TestConcurrentWakes runs Wake from many goroutines (for the race
// detector); every wake is counted exactly once.
func TestConcurrentWakes(t *testing.T) {
	e := newEnv(t)
	c := e.config()
	c.MaxInFlight = 4
	s := e.start(c)
	const goroutines, each = 8, 25
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if i%2 == 0 {
					s.Wake(fmt.Sprint("srv-", g), "fcm", e.fcmToken())
				} else {
					s.Wake(fmt.Sprint("srv-", g), "apns", e.apnsToken())
				}
			}
		})
	}
	wg.Wait()
	settle(s)
	var total float64
	for _, p := range platformNames {
		for _, o := range outcomeNames {
			total += count(s, p, o)
		}
	}
	if total != goroutines*each {
		t.Errorf("counted %v wakes, want %d", total, goroutines*each)
	}
	if got := count(s, "fcm", "sent") + count(s, "apns", "sent"); got < 1 || got > goroutines*6 {
		t.Errorf("sent = %v, want between 1 and %d (burst per id)", got, goroutines*6)
	}
}
