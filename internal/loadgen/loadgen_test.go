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
	url, _ := startRelayServer(t, cfg)
	return url
}

// startRelayServer is startRelay that also returns the relay.
func startRelayServer(t *testing.T, cfg relay.Config) (string, *relay.Server) {
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
	return "ws" + strings.TrimPrefix(hs.URL, "http"), srv
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	cfg.RelayPIDs = []int{os.Getpid()} // the relay runs in this process
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
		Hold: 100 * time.Millisecond, ProbeDuration: 300 * time.Millisecond, IdleAt: 30 * time.Millisecond,
		SourceIPs: []netIP{ip(127, 0, 0, 2), ip(127, 0, 0, 3)}})
	checkStreams(t, res)
	checkLatency(t, "probe", res.Latency)
	if res.Connections.Binaries != 20 || res.Connections.Phones != 40 {
		t.Errorf("connections %+v", res.Connections)
	}
	checkRelay(t, res, 60)
	if rs := res.Relay; rs == nil || rs.IdleAt != 0.03 || rs.RSSIdleAt <= 0 || rs.Settled != 0.07 || rs.SettledCPUSeconds < 0 {
		t.Errorf("--idle-at: %+v", res.Relay)
	}
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

// Chat traffic on a relay with short timers: every pause is three to five
// times a heartbeat plus the write timeout, so the relay pings each
// connection several times (and the write deadline it set for each ping
// passes) before every lone frame and its echo. Before the fix for stale
// write deadlines the relay's first write after such a pause failed and
// dropped the connection; now every frame must come back and nothing drop.
func TestChat(t *testing.T) {
	rcfg := relay.Config{HeartbeatInterval: 200 * time.Millisecond, WriteTimeout: 50 * time.Millisecond}
	url := startRelay(t, rcfg)
	cfg := Config{Mode: ModeChat, URL: url, Binaries: 6, Phones: 6, Size: 300,
		PauseMin: 750 * time.Millisecond, PauseMax: 1250 * time.Millisecond, Duration: 5 * time.Second}
	if idle := rcfg.HeartbeatInterval + rcfg.WriteTimeout; cfg.PauseMin < 3*idle {
		t.Fatalf("pauses must outlast a heartbeat plus the write timeout (%v) several times", idle)
	}
	res := run(t, cfg)
	checkStreams(t, res)
	checkLatency(t, "round trip", res.Latency)
	checkRelay(t, res, 12)
	if res.Connections.Binaries != 6 || res.Connections.Phones != 6 || res.Connections.Dropped != 0 {
		t.Errorf("connections %+v, want 6 + 6 and none dropped", res.Connections)
	}
	// Every frame was sent in the measured window and is timed.
	if res.OpUnit != "round_trip" || res.Ops != res.Frames.Received || res.Latency.Count != res.Frames.Received {
		t.Errorf("%d %ss measured, %d timed, %d received", res.Ops, res.OpUnit, res.Latency.Count, res.Frames.Received)
	}
	c := res.Chat
	if c == nil {
		t.Fatal("no chat figures")
	}
	// The first pause ends by 1.25 s of 5 s, so every phone sent frames.
	if c.SilentPhones != 0 || res.Frames.Sent < 6 {
		t.Errorf("%d phones silent, %d frames sent", c.SilentPhones, res.Frames.Sent)
	}
	if c.LongestPause < 0.75 || res.Params.PauseMin != 0.75 || res.Params.PauseMax != 1.25 {
		t.Errorf("pauses: longest %.3f s, params %+v", c.LongestPause, res.Params)
	}
	// The case under test happened: frames followed pings.
	if res.Pings == 0 || c.AfterPing == 0 {
		t.Errorf("%d pings, %d frames after a ping: the pauses did not outlast a heartbeat", res.Pings, c.AfterPing)
	}
}

// A connection the relay drops is an error: the relay shuts down while the
// phones are between frames.
func TestChatDropped(t *testing.T) {
	url, srv := startRelayServer(t, relay.Config{})
	done := make(chan *Result, 1)
	go func() {
		res, err := Run(context.Background(), Config{Mode: ModeChat, URL: url, Binaries: 3, Phones: 3, Size: 200,
			PauseMin: 100 * time.Millisecond, PauseMax: 200 * time.Millisecond, Duration: 4 * time.Second})
		if err != nil {
			t.Errorf("run: %v", err)
		}
		done <- res
	}()
	for i := 0; ; i++ { // until every connection is registered, at most 20 s
		if b, p := srv.Counts(); b == 3 && p == 3 {
			break
		}
		if i == 2000 {
			t.Fatal("the connections never registered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // phones are talking
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	res := <-done
	if res == nil {
		return
	}
	var b strings.Builder
	res.WriteText(&b)
	t.Log("\n" + b.String())
	if res.OK || res.Connections.Dropped == 0 || !strings.Contains(b.String(), "DROPPED") {
		t.Errorf("a relay shutting down: OK %v, connections %+v, want dropped and not OK", res.OK, res.Connections)
	}
	closed := false
	for k := range res.Errors {
		closed = closed || strings.Contains(k, "closed 1001")
	}
	if !closed {
		t.Errorf("errors %v: want the relay's 1001 close", res.Errors)
	}
}
