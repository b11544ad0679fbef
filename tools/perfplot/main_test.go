package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pyrycode/pyrycode-relay/internal/loadgen"
)

func TestParseName(t *testing.T) {
	for _, c := range []struct {
		name, mode, io string
		n              int
	}{
		{"out/idle-loop-15000.json", "idle", "loop", 15000},
		{"rt-goroutine-100.json", "rt", "goroutine", 100},
		{"idle-100.json", "idle", "", 100},
		{"idle-loop.json", "idle", "loop", 0},
		{"idle.json", "idle", "", 0},
	} {
		mode, io, n := parseName(c.name)
		if mode != c.mode || io != c.io || n != c.n {
			t.Errorf("parseName(%q) = %q, %q, %d; want %q, %q, %d", c.name, mode, io, n, c.mode, c.io, c.n)
		}
	}
}

func writeResult(t *testing.T, dir, name string, r loadgen.Result) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func idleResult(n int, atKiB, holdKiB float64) loadgen.Result {
	return loadgen.Result{
		Mode: loadgen.ModeIdle, OK: true,
		Params:      loadgen.Params{Hold: 45},
		Connections: loadgen.ConnStats{Binaries: n / 2, Phones: n - n/2},
		Relay: &loadgen.RelayStats{
			RSSAfter: 64 << 20, RSSPerConn: holdKiB * 1024,
			IdleAt: 3, RSSPerConnIdleAt: atKiB * 1024,
		},
	}
}

func rtResult(cpuUs float64) loadgen.Result {
	return loadgen.Result{
		Mode: loadgen.ModeRT, OK: true, OpsPerSec: 50000,
		Latency: loadgen.Latency{P50: 1.5, P99: 9},
		Relay:   &loadgen.RelayStats{CPUPerOpUs: cpuUs},
	}
}

func TestLoadAndTable(t *testing.T) {
	dir := t.TempDir()
	files := []string{
		writeResult(t, dir, "idle-loop-1000.json", idleResult(1000, 3.5, 2.5)),
		writeResult(t, dir, "rt-loop-1000.json", rtResult(7.25)),
		writeResult(t, dir, "idle-loop-100.json", idleResult(100, 20, 18)),
		writeResult(t, dir, "idle-goroutine-100.json", idleResult(100, 30, 25)),
		writeResult(t, dir, "rt-goroutine-100.json", rtResult(12)),
	}
	pts, err := load(files)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range pts {
		got = append(got, fmt.Sprintf("%s/%d", p.io, p.conns))
	}
	if want := "loop/100 loop/1000 goroutine/100"; strings.Join(got, " ") != want {
		t.Fatalf("points %v, want %s", got, want)
	}
	if p := pts[1]; p.atKiB != 3.5 || p.holdKiB != 2.5 || p.cpuUs != 7.25 || p.rssMiB != 64 {
		t.Errorf("loop/1000: %+v", p)
	}
	var b bytes.Buffer
	table(&b, pts)
	out := b.String()
	for _, want := range []string{
		"3 s after the last connect", "after a 45 s hold",
		"| `--io loop` | 100 | 20.00 KiB | 18.00 KiB | 64.0 MiB | – | – | – | – |",
		"| `--io loop` | 1000 | 3.50 KiB | 2.50 KiB | 64.0 MiB | 7.25 µs | 50000 | 1.500 ms | 9.000 ms |",
		"| `--io goroutine` | 100 | 30.00 KiB | 25.00 KiB | 64.0 MiB | 12.00 µs |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	var svgOut bytes.Buffer
	svg(&svgOut, pts)
	if s := svgOut.String(); !strings.HasPrefix(s, "<svg") || strings.Count(s, "<polyline") != 6 {
		t.Errorf("svg: want 6 lines (memory twice and CPU once per path), got:\n%s", s)
	}
}

func TestLoadRejectsRTWithoutCount(t *testing.T) {
	dir := t.TempDir()
	if _, err := load([]string{writeResult(t, dir, "rt-loop.json", rtResult(5))}); err == nil {
		t.Fatal("an rt result without a count in its name was accepted")
	}
}
