package limits

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

// The tests serve a real relay.Server behind the limiter on 127.0.0.1 and
// drive it over real sockets whose source addresses are picked from
// 127.0.0.0/8, so each test address is a distinct client IP.

func TestMain(m *testing.M) {
	// Idle pooled writers park in writerWorker's select until they time out.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/pyrycode/pyrycode-relay/internal/peer.writerWorker"))
}

// env is a relay served through a Limiter.
type env struct {
	lim  *Limiter
	srv  *relay.Server
	addr string
	logs *syncBuf // the relay's and net/http's log output
}

// startEnv serves a relay behind a Limiter for cfg on a loopback listener,
// wired as run.go should wire it, and stops both when the test ends.
func startEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	logs := new(syncBuf)
	lg := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := relay.New(relay.Config{CloseWait: 200 * time.Millisecond}, lg)
	lim, err := New(cfg, srv.Stats())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		Handler:           lim.Middleware(srv),
		ConnContext:       lim.ConnContext,
		ReadHeaderTimeout: 2 * time.Second,
		IdleTimeout:       5 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(logs, "http: ", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(lim.Listener(ln))
	}()
	t.Cleanup(func() {
		hs.Close()
		<-done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("relay shutdown: %v", err)
		}
		if s := logs.String(); strings.Contains(s, "panic") {
			t.Errorf("server logged a panic:\n%s", s)
		}
	})
	return &env{lim: lim, srv: srv, addr: ln.Addr().String(), logs: logs}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dialFrom opens a TCP connection to addr from the loopback address from;
// it is closed when the test ends.
func dialFrom(t testing.TB, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

var idSeq atomic.Int64

// binaryReq is a /v1/server upgrade request with a fresh server-id.
func binaryReq(extra ...string) string {
	return upgradeReq("/v1/server", append([]string{
		fmt.Sprintf("X-Pyrycode-Server: lim-%d", idSeq.Add(1)),
		"X-Pyrycode-Version: 0.11.0",
		"User-Agent: pyry/0.11.0",
	}, extra...)...)
}

// phoneReq is a /v1/client upgrade request (for a server-id nobody holds,
// so the relay closes it with 4404 right after the upgrade).
func phoneReq(extra ...string) string {
	return upgradeReq("/v1/client", append([]string{
		"X-Pyrycode-Server: nobody-home",
		"X-Pyrycode-Token: secret-device-token",
		"X-Pyrycode-Device-Name: test phone",
		"User-Agent: pyrycode-mobile/1.0.0",
	}, extra...)...)
}

func upgradeReq(path string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", path)
	b.WriteString("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func getReq(path string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: relay.test\r\n", path)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// exchange is one request on a raw connection and its answer.
type exchange struct {
	status int
	body   string
	header http.Header
	br     *bufio.Reader
	nc     net.Conn
}

// send writes pre and req on nc and reads the response head (and the body
// unless it is a 101).
func send(t testing.TB, nc net.Conn, pre []byte, req string) exchange {
	t.Helper()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(append(append([]byte(nil), pre...), req...)); err != nil {
		t.Fatalf("write: %v", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	ex := exchange{status: resp.StatusCode, header: resp.Header, br: br, nc: nc}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read body: %v", err)
		}
		ex.body = string(b)
	}
	_ = nc.SetDeadline(time.Time{})
	return ex
}

// request dials from and sends req.
func (e *env) request(t testing.TB, from, req string) exchange {
	t.Helper()
	return send(t, dialFrom(t, from, e.addr), nil, req)
}

// wantStatus checks an answer's status and that a refusal's body is empty.
func wantStatus(t testing.TB, ex exchange, status int) {
	t.Helper()
	if ex.status != status {
		t.Fatalf("status %d, want %d (body %q)", ex.status, status, ex.body)
	}
	if status >= 400 && ex.body != "" {
		t.Fatalf("status %d has body %q, want none", status, ex.body)
	}
}

// wantClosed checks that the server closes the connection after answering.
func wantClosed(t testing.TB, ex exchange) {
	t.Helper()
	_ = ex.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := ex.br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection still open after refusal: read %d, %v", n, err)
	}
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 5s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// clock is a settable clock for the rate limiter.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
