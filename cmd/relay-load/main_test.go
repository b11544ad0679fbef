package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/clustertest"
	"github.com/pyrycode/pyrycode-relay/internal/loadgen"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

// startRelay serves an in-process relay on 127.0.0.1 and returns its ws:// URL.
func startRelay(t *testing.T, cfg relay.Config) string {
	t.Helper()
	cfg.CloseWait = 200 * time.Millisecond
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

func TestJSONReport(t *testing.T) {
	url := startRelay(t, relay.Config{})
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--url", url, "--json", "--binaries", "1", "--phones", "4",
		"--warmup", "50ms", "--duration", "300ms", "--source-ips", "127.0.0.2-127.0.0.4", "--progress-interval", "100ms"}, &out, &errb, false)
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	var res loadgen.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out.String())
	}
	if !res.OK || res.Mode != "rt" || res.Ops == 0 || res.Latency.P99 <= 0 || res.Frames.Lost != 0 ||
		res.Params.SourceIPs != 3 || res.Connections.Phones != 4 {
		t.Errorf("result: %s", out.String())
	}
	if !strings.Contains(errb.String(), "[rt ") {
		t.Errorf("no progress lines on stderr: %q", errb.String())
	}
}

// The chat flags reach the run: pauses longer than the relay's heartbeat
// plus write timeout, every frame back, the pings and pauses reported.
func TestChatFlags(t *testing.T) {
	url := startRelay(t, relay.Config{HeartbeatInterval: 200 * time.Millisecond, WriteTimeout: 50 * time.Millisecond})
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--url", url, "--mode", "chat", "--json", "--quiet", "--phones", "3",
		"--pause-min", "800ms", "--pause-max", "1s", "--duration", "3s", "--size", "200"}, &out, &errb, false)
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	var res loadgen.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out.String())
	}
	if !res.OK || res.Mode != "chat" || res.Connections.Binaries != 3 || res.Connections.Phones != 3 ||
		res.Params.PauseMin != 0.8 || res.Params.PauseMax != 1 || res.Params.Duration != 3 ||
		res.Frames.Sent < 3 || res.Frames.Received != res.Frames.Sent || res.Pings == 0 ||
		res.Chat == nil || res.Chat.AfterPing == 0 || errb.Len() != 0 {
		t.Errorf("result: %s\nstderr: %s", out.String(), errb.String())
	}
}

// --binary-url and --phone-url put the two ends on two nodes of a cluster;
// --relay-pid takes several pids.
func TestClusterFlags(t *testing.T) {
	nats := clustertest.StartNATS(t)
	a := clustertest.StartNode(t, nats, "relayload", relay.Config{})
	b := clustertest.StartNode(t, nats, "relayload", relay.Config{})
	pid := strconv.Itoa(os.Getpid())
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--binary-url", a.URL, "--phone-url", b.URL, "--json", "--quiet",
		"--binaries", "2", "--phones", "4", "--warmup", "50ms", "--duration", "300ms",
		"--relay-pid", pid + "," + pid, "--relay-pid", pid}, &out, &errb, false)
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	var res loadgen.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out.String())
	}
	if !res.OK || res.BinaryURL != a.URL || res.PhoneURL != b.URL || res.Frames.Lost != 0 || res.Frames.Received == 0 ||
		res.Relay == nil || len(res.Relay.Procs) != 3 || res.Params.SourceIPs == 0 {
		t.Errorf("result: %s", out.String())
	}
	if toBin, _ := a.CrossNode(); toBin < 4 {
		t.Errorf("%d frames reached node A's binaries across NATS, want at least 4", toBin)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"--nope"}, {"extra"}, {"--source-ips", "127.0.0.5-127.0.0.1"},
		{"--mode", "chat", "--pause-min", "2s", "--pause-max", "1s"}, {"--mode", "chat", "--pause-max", "-1s"},
		{"--relay-pid", "12,x"}, {"--relay-pid", "0"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb, false); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--url", "ws://192.0.2.1:1"}, &out, &errb, false); code != 1 ||
		!strings.Contains(errb.String(), "--allow-remote") {
		t.Errorf("remote URL: exit %d, %s", code, errb.String())
	}
	if code := run(context.Background(), []string{"-h"}, &out, &errb, false); code != 0 || !strings.Contains(errb.String(), "Modes") {
		t.Errorf("-h: exit %d", code)
	}
}
