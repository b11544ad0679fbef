package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/loadgen"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

func TestJSONReport(t *testing.T) {
	srv := relay.New(relay.Config{CloseWait: 200 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	hs := httptest.NewServer(srv)
	defer func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
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

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"--nope"}, {"extra"}, {"--source-ips", "127.0.0.5-127.0.0.1"}} {
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
