package loadgen

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

// startRelay serves an in-process relay on 127.0.0.1 and returns its
// ws:// URL.
func startRelay(t *testing.T, cfg relay.Config) string {
	t.Helper()
	if cfg.CloseWait == 0 {
		cfg.CloseWait = 200 * time.Millisecond
	}
	srv := relay.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "ws" + strings.TrimPrefix(hs.URL, "http")
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	cfg.RelayPID = os.Getpid() // the relay runs in this process
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	var b strings.Builder
	res.WriteText(&b)
	t.Log("\n" + b.String())
	return res
}

// checkStreams asserts the end-to-end checks found nothing wrong.
func checkStreams(t *testing.T, res *Result) {
	t.Helper()
	f := res.Frames
	if f.Lost != 0 || f.Duplicated != 0 || f.Reordered != 0 || f.Corrupt != 0 {
		t.Errorf("frames %+v: want none lost, duplicated, reordered or corrupt", f)
	}
	if f.Sent == 0 || f.Received != f.Sent {
		t.Errorf("frames sent %d, received %d", f.Sent, f.Received)
	}
	if len(res.Errors) != 0 {
		t.Errorf("errors: %v %v", res.Errors, res.ErrorSamples)
	}
	if !res.OK {
		t.Error("result not OK")
	}
}

func checkLatency(t *testing.T, name string, l Latency) {
	t.Helper()
	if l.Count == 0 || l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.P999 || l.P999 > l.Max || l.Min > l.P50 {
		t.Errorf("%s latency not sane: %+v", name, l)
	}
}

func checkRelay(t *testing.T, res *Result, wantConns int) {
	t.Helper()
	rs := res.Relay
	if rs == nil {
		t.Fatal("no relay stats with --relay-pid")
	}
	if rs.PID != os.Getpid() || rs.RSSBefore <= 0 || rs.RSSAfter <= 0 || rs.RSSPeak < rs.RSSAfter || rs.CPUSeconds < 0 {
		t.Errorf("relay stats not sane: %+v", rs)
	}
	if rs.Conns != wantConns {
		t.Errorf("relay conns = %d, want %d", rs.Conns, wantConns)
	}
}

func TestRT(t *testing.T) {
	url := startRelay(t, relay.Config{})
	res := run(t, Config{Mode: ModeRT, URL: url, Binaries: 2, Phones: 8, Window: 4, Size: 512,
		Warmup: 100 * time.Millisecond, Duration: 400 * time.Millisecond})
	checkStreams(t, res)
	checkLatency(t, "round trip", res.Latency)
	checkLatency(t, "connect", res.ConnectLatency)
	if res.Connections.Binaries != 2 || res.Connections.Phones != 8 || res.Ops == 0 || res.OpsPerSec <= 0 || res.OpUnit != "round_trip" {
		t.Errorf("report fields: %+v ops %d rate %f unit %s", res.Connections, res.Ops, res.OpsPerSec, res.OpUnit)
	}
	if res.Ops > res.Frames.Received {
		t.Errorf("measured %d round trips of %d received frames", res.Ops, res.Frames.Received)
	}
	checkRelay(t, res, 10)
	if res.Relay.CPUPerOpUs <= 0 && res.Relay.CPUSeconds > 0 {
		t.Errorf("cpu per op: %+v", res.Relay)
	}
}

func TestIdle(t *testing.T) {
	url := startRelay(t, relay.Config{})
	res := run(t, Config{Mode: ModeIdle, URL: url, Binaries: 20, Phones: 40, ProbePhones: 2,
		Hold: 100 * time.Millisecond, ProbeDuration: 300 * time.Millisecond,
		SourceIPs: []netIP{ip(127, 0, 0, 2), ip(127, 0, 0, 3)}})
	checkStreams(t, res)
	checkLatency(t, "probe", res.Latency)
	if res.Connections.Binaries != 20 || res.Connections.Phones != 40 {
		t.Errorf("connections %+v", res.Connections)
	}
	checkRelay(t, res, 60)
}

func TestFanout(t *testing.T) {
	url := startRelay(t, relay.Config{})
	res := run(t, Config{Mode: ModeFanout, URL: url, Phones: 16, Window: 16, Size: 300,
		Warmup: 100 * time.Millisecond, Duration: 400 * time.Millisecond})
	checkStreams(t, res)
	checkLatency(t, "frame", res.Latency)
	if res.Connections.Binaries != 1 || res.Connections.Phones != 16 || res.OpUnit != "frame" || res.Ops == 0 {
		t.Errorf("report fields: %+v ops %d unit %s", res.Connections, res.Ops, res.OpUnit)
	}
	checkRelay(t, res, 17)
}

func TestChurn(t *testing.T) {
	url := startRelay(t, relay.Config{})
	res := run(t, Config{Mode: ModeChurn, URL: url, Rate: 200, Concurrency: 4, Duration: 500 * time.Millisecond})
	if len(res.Errors) != 0 || !res.OK {
		t.Errorf("errors: %v %v", res.Errors, res.ErrorSamples)
	}
	checkLatency(t, "cycle", res.Latency)
	if res.Ops < 10 || res.Ops > 101 || res.OpUnit != "cycle" { // paced: never more than 200/s
		t.Errorf("cycles = %d %s, want about 100 at 200/s for 0.5 s", res.Ops, res.OpUnit)
	}
	if res.CloseNotices["1000"] != int64(res.Ops) {
		t.Errorf("close notices %v, want 1000 ×%d", res.CloseNotices, res.Ops)
	}
}

func TestStall(t *testing.T) {
	const budget = 64 << 10
	url := startRelay(t, relay.Config{MaxFrameBytes: 32 << 10, PhoneQueueBytes: budget, MaxPhones: 100,
		WriteTimeout: time.Second})
	res := run(t, Config{Mode: ModeStall, URL: url, Phones: 10, Size: 16 << 10, PhoneQueueBytes: budget,
		Duration: 5 * time.Second})
	if len(res.Errors) != 0 {
		t.Errorf("errors: %v %v", res.Errors, res.ErrorSamples)
	}
	// The relay closes a stalled phone once its queue overflows or a write
	// blocks for a second; on a slow machine the kernel's socket buffers may
	// keep a few open until the run ends.
	if res.Stall == nil || res.Stall.PhonesClosed < 1 || res.Stall.BudgetSum != 10*budget {
		t.Fatalf("stall: %+v", res.Stall)
	}
	if res.CloseNotices["1011"] != res.Stall.PhonesClosed {
		t.Errorf("close notices %v, want 1011 ×%d", res.CloseNotices, res.Stall.PhonesClosed)
	}
	if res.Ops == 0 || res.Frames.Sent != res.Ops {
		t.Errorf("frames sent %d, ops %d", res.Frames.Sent, res.Ops)
	}
}
