package push

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// gather registers s's collectors on a fresh pedantic registry (which
// also checks their descriptions) and gathers them.
func gather(t *testing.T, s *Sender) map[string][]map[string]string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]map[string]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[mf.GetName()] = append(out[mf.GetName()], labels)
		}
	}
	return out
}

// histCount returns the sample count of push_seconds{platform}.
func histCount(t *testing.T, s *Sender, platform string) uint64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metricSeconds {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == platform {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	t.Fatalf("no %s{platform=%q}", metricSeconds, platform)
	return 0
}

// TestSeriesFromStart: every series exists at zero before any wake, with
// only the documented label values.
func TestSeriesFromStart(t *testing.T) {
	e := newEnv(t)
	for _, c := range []Config{{}, e.config()} {
		s, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		got := gather(t, s)
		if n := len(got["pyrycode_relay_push_wakes_total"]); n != 14 {
			t.Errorf("push_wakes_total has %d series, want 14", n)
		}
		seen := map[string]bool{}
		for _, l := range got["pyrycode_relay_push_wakes_total"] {
			seen[l["platform"]+"/"+l["outcome"]] = true
		}
		for _, p := range []string{"fcm", "apns"} {
			for _, o := range []string{"sent", "unregistered", "rejected", "failed", "rate_limited", "in_flight_cap", "off"} {
				if !seen[p+"/"+o] {
					t.Errorf("missing series %s/%s", p, o)
				}
			}
		}
		if n := len(got["pyrycode_relay_push_seconds"]); n != 2 {
			t.Errorf("push_seconds has %d series, want 2", n)
		}
		wantCounts(t, s, nil)
		if err := s.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}
