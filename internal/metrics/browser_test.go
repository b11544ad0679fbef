package metrics

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

const chromiumPath = "/usr/bin/chromium"

// runChromium loads url in headless Chromium with extra flags and returns
// its standard output. The run, and every process it starts, is ended if
// it takes longer than a minute.
func runChromium(t *testing.T, url string, extra ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + dir, "--virtual-time-budget=5000",
	}, extra...)
	cmd := exec.CommandContext(ctx, chromiumPath, append(args, url)...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("chromium did not finish within a minute; stderr:\n%s", stderr.Bytes())
	}
	if err != nil {
		t.Fatalf("chromium: %v; stderr:\n%s", err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// TestStatusPageInBrowser loads the status page in a real headless
// browser and checks what it shows once its script has fetched
// /status.json: the live numbers and drawn graphs. It is skipped where
// Debian's chromium is not installed.
//
// Set METRICS_SCREENSHOT=/path/to/file.png to also save a screenshot.
func TestStatusPageInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("%s not installed: %v", chromiumPath, err)
	}
	e := newEnv(t, Options{Interval: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.m.Start(ctx)

	bin := e.binary("host-3")
	p1 := e.phone("host-3")
	e.phone("host-3")
	for range 5 {
		connIDOf(t, p1, bin, `{"v":2,"type":"noise_msg","data":"eA=="}`)
	}
	// Let the sampler take a few points so the graphs have a line.
	eventually(t, func() bool { h, _ := e.m.history(); return len(h) >= 5 })

	dom := string(runChromium(t, e.metrics+"/", "--dump-dom"))
	text := func(id string) string {
		re := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)<`)
		m := re.FindStringSubmatch(dom)
		if m == nil {
			t.Fatalf("no element with id %q in the rendered page:\n%s", id, dom)
		}
		return strings.TrimSpace(m[1])
	}
	for id, want := range map[string]string{
		"binaries":  "1",
		"phones":    "2",
		"live_ids":  "1",
		"grace_ids": "0",
		"state":     "live",
	} {
		if got := text(id); got != want {
			t.Errorf("page shows %s = %q, want %q", id, got, want)
		}
	}
	if up := text("uptime"); !regexp.MustCompile(`^\d+s$`).MatchString(up) {
		t.Errorf("page shows uptime %q", up)
	}
	for _, id := range []string{"fps", "dps"} {
		if v := text(id); !regexp.MustCompile(`^\d+(\.\d)?$`).MatchString(v) {
			t.Errorf("page shows %s = %q, want a number", id, v)
		}
	}
	// The graphs were drawn from the history: each line has points, and
	// the connection graph's phone line sits at its top (2 of a scale of 2).
	for _, id := range []string{"line-binaries", "line-phones", "line-fps", "line-dps"} {
		re := regexp.MustCompile(`id="` + id + `"[^>]*points="([^"]*)"`)
		m := re.FindStringSubmatch(dom)
		if m == nil || len(strings.Fields(m[1])) < 2 {
			t.Errorf("graph line %s has no points in the rendered page", id)
		}
	}
	if got := text("max-conn"); got != "2" {
		t.Errorf("connections graph scale %q, want 2", got)
	}
	if m := regexp.MustCompile(`id="line-phones"[^>]*points="[^"]*,0\.0"`).FindString(dom); m == "" {
		t.Error("phones line does not reach the top of its graph")
	}

	if path := os.Getenv("METRICS_SCREENSHOT"); path != "" {
		runChromium(t, e.metrics+"/", "--screenshot="+path, "--window-size=1000,900", "--hide-scrollbars")
		t.Logf("screenshot saved to %s", path)
	}
}
