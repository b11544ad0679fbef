package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

func getStatus(t *testing.T, e *env) status {
	t.Helper()
	resp, body := e.get("/status.json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/status.json status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q", got)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q", got)
	}
	var s status
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	return s
}

// TestStatusJSON checks the live numbers and the sampled history against a
// relay with one binary and two phones.
func TestStatusJSON(t *testing.T) {
	e := newEnv(t, Options{Interval: 20 * time.Millisecond})
	// Before Start there is no history, but the live numbers are there.
	s := getStatus(t, e)
	if s.Binaries != 0 || s.Phones != 0 || len(s.History) != 0 || s.History == nil {
		t.Fatalf("fresh status %+v", s)
	}
	if s.HistorySeconds != 12 { // 600 samples at 20 ms
		t.Errorf("history_seconds = %d", s.HistorySeconds)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.m.Start(ctx)
	bin := e.binary("host-2")
	p1 := e.phone("host-2")
	e.phone("host-2")
	connIDOf(t, p1, bin, `{"n":1}`)
	send(t, bin, `garbage`)
	send(t, bin, `garbage`)

	s = getStatus(t, e)
	if s.Binaries != 1 || s.Phones != 2 || s.LiveIDs != 1 || s.GraceIDs != 0 {
		t.Errorf("status %+v", s)
	}
	if s.UptimeSeconds < 0 || s.UptimeSeconds > 60 {
		t.Errorf("uptime_seconds = %d", s.UptimeSeconds)
	}
	// The sampler saw the frame and the drops at some point.
	eventually(t, func() bool {
		s = getStatus(t, e)
		var frames, drops float64
		for _, p := range s.History {
			frames += p.FPS
			drops += p.DPS
		}
		last := s.History[len(s.History)-1]
		return frames > 0 && drops > 0 && last.Binaries == 1 && last.Phones == 2 && last.LiveIDs == 1
	})
	for i := 1; i < len(s.History); i++ {
		if s.History[i].T < s.History[i-1].T {
			t.Fatalf("history not in time order at %d: %+v", i, s.History)
		}
	}
	e.m.Close()
	e.m.Close() // twice is fine
}

// fakeSource is a Source whose counters the test sets directly.
type fakeSource struct {
	st           relay.Stats
	bins, phones int64
}

func (f *fakeSource) Stats() *relay.Stats              { return &f.st }
func (f *fakeSource) Counts() (binaries, phones int64) { return f.bins, f.phones }

// TestSamplerRatesAndRing checks the rates and the ring buffer with a
// controlled clock.
func TestSamplerRatesAndRing(t *testing.T) {
	src := &fakeSource{bins: 1, phones: 4}
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	m := New(src, func() (int, int) { return 3, 2 }, Options{History: 4, Now: func() time.Time { return now }})

	m.sample(now) // first point: no rate yet
	src.st.FramesToBinary.Add(30)
	src.st.FramesToPhone.Add(10)
	src.st.DroppedMalformed.Add(2)
	src.st.PushDropped.Add(2)
	now = t0.Add(2 * time.Second)
	m.sample(now)

	st := m.status()
	if st.FPS != 20 || st.DPS != 2 {
		t.Errorf("rates %v frames/s %v drops/s, want 20 and 2", st.FPS, st.DPS)
	}
	if st.UptimeSeconds != 2 || st.Binaries != 1 || st.Phones != 4 || st.LiveIDs != 3 || st.GraceIDs != 2 {
		t.Errorf("status %+v", st)
	}
	want := []sample{
		{T: t0.Unix(), Binaries: 1, Phones: 4, LiveIDs: 3, GraceIDs: 2},
		{T: t0.Unix() + 2, Binaries: 1, Phones: 4, LiveIDs: 3, GraceIDs: 2, FPS: 20, DPS: 2},
	}
	if !equalSamples(st.History, want) {
		t.Errorf("history %+v, want %+v", st.History, want)
	}

	// Every drop reason counts towards drops per second.
	for _, r := range []func(*relay.Stats){
		func(s *relay.Stats) { s.DroppedUnknownConn.Add(1) },
		func(s *relay.Stats) { s.DroppedBinaryOp.Add(1) },
		func(s *relay.Stats) { s.BacklogCloses.Add(1) },
		func(s *relay.Stats) { s.BudgetCloses.Add(1) },
		func(s *relay.Stats) { s.PushMalformed.Add(1) },
		func(s *relay.Stats) { s.CloseCodeReplaced.Add(1) },
	} {
		r(&src.st)
	}
	now = now.Add(time.Second)
	m.sample(now)
	if st := m.status(); st.DPS != 6 || st.FPS != 0 {
		t.Errorf("rates %v frames/s %v drops/s, want 0 and 6", st.FPS, st.DPS)
	}

	// The ring keeps the newest History points, oldest first.
	for i := 0; i < 5; i++ {
		now = now.Add(time.Second)
		src.phones = int64(10 + i)
		m.sample(now)
	}
	st = m.status()
	if len(st.History) != 4 {
		t.Fatalf("history has %d points, want 4", len(st.History))
	}
	for i, p := range st.History {
		if p.Phones != int64(11+i) || p.T != now.Unix()-int64(3-i) {
			t.Errorf("history[%d] = %+v", i, p)
		}
	}
}

func equalSamples(a, b []sample) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestStartStop checks that the sampler ends with its context or with
// Close (goleak in TestMain catches a goroutine left behind) and that
// Start after Close does nothing.
func TestStartStop(t *testing.T) {
	src := &fakeSource{}
	m := New(src, nil, Options{Interval: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	m.Start(ctx)
	m.Start(ctx) // second call ignored
	eventually(t, func() bool { h, _ := m.history(); return len(h) >= 3 })
	cancel()
	m.Close()

	m2 := New(src, nil, Options{Interval: time.Millisecond})
	m2.Close()
	m2.Start(context.Background())
	if h, _ := m2.history(); len(h) != 0 {
		t.Errorf("Start after Close sampled %d points", len(h))
	}
	m2.Close()

	// Close from several goroutines at once while sampling.
	m3 := New(src, nil, Options{Interval: time.Millisecond})
	m3.Start(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); m3.Close() }()
	}
	wg.Wait()
}

// TestRoutes checks every path and method of the metrics listener.
func TestRoutes(t *testing.T) {
	e := newEnv(t, Options{})
	for _, tc := range []struct {
		method, path string
		code         int
		ctype        string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/", 200, "text/html; charset=utf-8"},
		{"GET", "/metrics", 200, "text/plain; version=0.0.4"},
		{"GET", "/status.json", 200, "application/json"},
		{"GET", "/index.html", 404, ""},
		{"GET", "/metrics/", 404, ""},
		{"GET", "/status", 404, ""},
		{"GET", "/healthz", 404, ""},
		{"GET", "/v1/server", 404, ""},
		{"GET", "/favicon.ico", 404, ""},
		{"POST", "/", 405, ""},
		{"POST", "/metrics", 405, ""},
		{"DELETE", "/status.json", 405, ""},
		{"POST", "/nowhere", 404, ""},
	} {
		req, _ := http.NewRequest(tc.method, e.metrics+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.code)
		}
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) {
			t.Errorf("%s %s Content-Type %q, want %q", tc.method, tc.path, resp.Header.Get("Content-Type"), tc.ctype)
		}
		if tc.code == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s Allow %q", tc.method, tc.path, resp.Header.Get("Allow"))
		}
	}
}

// TestPageIsSelfContained checks that the status page loads nothing from
// elsewhere and that its CSP forbids it too.
func TestPageIsSelfContained(t *testing.T) {
	e := newEnv(t, Options{})
	resp, body := e.get("/")
	for _, bad := range []string{"http://", "https://", "<script src", "<link rel=\"stylesheet\"", "@import"} {
		if bytes.Contains(body, []byte(bad)) {
			t.Errorf("page contains %q", bad)
		}
	}
	for _, id := range []string{`id="binaries"`, `id="phones"`, `id="live_ids"`, `id="grace_ids"`, `id="fps"`, `id="dps"`} {
		if !bytes.Contains(body, []byte(id)) {
			t.Errorf("page lacks %s", id)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); csp != pageCSP {
		t.Errorf("CSP %q", csp)
	}
}
