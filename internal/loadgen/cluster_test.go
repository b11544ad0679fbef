package loadgen

import (
	"os"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/clustertest"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

// Binaries on one node of a cluster and phones on another: every frame
// crosses NATS both ways, and every mode that checks streams finds nothing
// lost, duplicated or reordered.
func TestCrossNode(t *testing.T) {
	nats := clustertest.StartNATS(t)
	a := clustertest.StartNode(t, nats, "loadgen", relay.Config{})
	b := clustertest.StartNode(t, nats, "loadgen", relay.Config{})
	both := Config{BinaryURL: a.URL, PhoneURL: b.URL, Warmup: 100 * time.Millisecond, Duration: 400 * time.Millisecond}

	crossed := func(mode string, phones int) {
		t.Helper()
		toBin, _ := a.CrossNode()
		_, toPhone := b.CrossNode()
		if toBin < int64(phones) || toPhone < int64(phones) {
			t.Errorf("%s: %d messages reached node A's binaries and %d node B's phones across NATS, want at least %d each",
				mode, toBin, toPhone, phones)
		}
	}

	t.Run("rt", func(t *testing.T) {
		cfg := both
		cfg.Mode, cfg.Binaries, cfg.Phones, cfg.Window, cfg.Size = ModeRT, 2, 8, 4, 1024
		res := run(t, cfg)
		checkStreams(t, res)
		checkLatency(t, "round trip", res.Latency)
		checkRelay(t, res, 10)
		if res.URL != "" || res.BinaryURL != a.URL || res.PhoneURL != b.URL {
			t.Errorf("report URLs: %q, binaries %q, phones %q", res.URL, res.BinaryURL, res.PhoneURL)
		}
		crossed("rt", 8)
	})
	t.Run("fanout", func(t *testing.T) {
		cfg := both
		cfg.Mode, cfg.Phones, cfg.Window, cfg.Size = ModeFanout, 8, 16, 300
		res := run(t, cfg)
		checkStreams(t, res)
		checkLatency(t, "frame", res.Latency)
		crossed("fanout", 8)
	})
	t.Run("idle", func(t *testing.T) {
		cfg := both
		cfg.Mode, cfg.Binaries, cfg.Phones, cfg.ProbePhones = ModeIdle, 10, 20, 2
		cfg.Hold, cfg.ProbeDuration = 100*time.Millisecond, 300*time.Millisecond
		res := run(t, cfg)
		checkStreams(t, res)
		if res.Connections.Binaries != 10 || res.Connections.Phones != 20 {
			t.Errorf("connections %+v", res.Connections)
		}
	})
	t.Run("chat", func(t *testing.T) {
		cfg := both
		cfg.Mode, cfg.Binaries, cfg.Phones, cfg.Size = ModeChat, 3, 3, 200
		cfg.PauseMin, cfg.PauseMax, cfg.Duration = 100*time.Millisecond, 200*time.Millisecond, 1500*time.Millisecond
		res := run(t, cfg)
		checkStreams(t, res)
		if res.Connections.Dropped != 0 || res.Chat == nil || res.Chat.SilentPhones != 0 {
			t.Errorf("connections %+v, chat %+v", res.Connections, res.Chat)
		}
	})
	t.Run("churn", func(t *testing.T) {
		cfg := both
		cfg.Mode, cfg.Rate, cfg.Concurrency = ModeChurn, 100, 4
		res := run(t, cfg)
		if len(res.Errors) != 0 || !res.OK || res.Ops == 0 {
			t.Errorf("churn: %d cycles, errors %v %v", res.Ops, res.Errors, res.ErrorSamples)
		}
		// Each phone's close reaches its binary on the other node.
		if res.CloseNotices["1000"] != int64(res.Ops) {
			t.Errorf("close notices %v, want 1000 ×%d", res.CloseNotices, res.Ops)
		}
	})
}

// Several relay pids are summed, and each is reported.
func TestSeveralRelayPIDs(t *testing.T) {
	url := startRelay(t, relay.Config{})
	cfg := Config{Mode: ModeRT, URL: url, Binaries: 1, Phones: 2, Window: 2, Size: 256,
		Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond}
	cfg.RelayPIDs = []int{os.Getpid(), os.Getppid()}
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkStreams(t, res)
	rs := res.Relay
	if rs == nil || len(rs.Procs) != 2 || rs.Procs[0].PID != os.Getpid() || rs.Procs[1].PID != os.Getppid() {
		t.Fatalf("relay stats %+v", rs)
	}
	if sum := rs.Procs[0].RSSAfter + rs.Procs[1].RSSAfter; rs.RSSAfter != sum || rs.Procs[1].RSSAfter <= 0 {
		t.Errorf("rss after %d, procs %+v: want their sum", rs.RSSAfter, rs.Procs)
	}
	if cpu := rs.Procs[0].CPUSeconds + rs.Procs[1].CPUSeconds; rs.CPUSeconds < cpu-1e-9 || rs.CPUSeconds > cpu+1e-9 {
		t.Errorf("cpu %f, procs %+v: want their sum", rs.CPUSeconds, rs.Procs)
	}
}
