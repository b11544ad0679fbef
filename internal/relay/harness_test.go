package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pyrycode/pyrycode-relay/internal/evloop"
	"github.com/pyrycode/pyrycode-relay/internal/front"
	"go.uber.org/goleak"
)

// The tests drive the relay over real sockets on 127.0.0.1 with gorilla's
// client, an implementation independent of the relay's own codec.

// testLoops serves the tests' connections on event loops when
// RELAY_TEST_IO=loop (nil: a goroutine per connection). CI runs the
// contract tests both ways.
var testLoops *evloop.Group

func TestMain(m *testing.M) {
	if os.Getenv("RELAY_TEST_IO") == "loop" {
		g, err := evloop.NewGroup(2)
		if err != nil {
			fmt.Fprintln(os.Stderr, "RELAY_TEST_IO=loop:", err)
			os.Exit(2)
		}
		testLoops = g
	}
	code := m.Run()
	if testLoops != nil {
		testLoops.Close()
	}
	if code == 0 {
		// Idle pooled writers park in writerWorker's select until they time out.
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/pyrycode/pyrycode-relay/internal/peer.writerWorker")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// withTestIO adds the I/O path chosen by RELAY_TEST_IO to opts.
func withTestIO(opts []Option) []Option {
	if testLoops == nil {
		return opts
	}
	return append([]Option{WithLoops(testLoops)}, opts...)
}

// testRelay is a relay served on a loopback listener.
type testRelay struct {
	t   *testing.T
	srv *Server
	hs  *httptest.Server
	url string // ws://127.0.0.1:port
}

// startRelay starts a relay with cfg (zero fields take test-friendly
// defaults) and shuts it down when the test ends.
func startRelay(t *testing.T, cfg Config, opts ...Option) *testRelay {
	t.Helper()
	if cfg.CloseWait == 0 {
		cfg.CloseWait = 500 * time.Millisecond
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 300 * time.Millisecond
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv := New(cfg, log, withTestIO(opts)...)
	// Served as the relay binary serves it: upgrades through front.
	hs := httptest.NewUnstartedServer(srv)
	hs.Listener = front.New(hs.Listener, hs.Config, IsUpgrade)
	hs.Start()
	tr := &testRelay{t: t, srv: srv, hs: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http")}
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := contextWithTimeout(5 * time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return tr
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// dial opens a WebSocket to path with h and fails the test on error.
func (tr *testRelay) dial(path string, h http.Header) *websocket.Conn {
	tr.t.Helper()
	c, resp, err := tr.tryDial(path, h)
	if err != nil {
		tr.t.Fatalf("dial %s: %v (resp %v)", path, err, resp)
	}
	return c
}

func (tr *testRelay) tryDial(path string, h http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(tr.url+path, h)
	if c != nil {
		tr.t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

func binaryHeaders(id string) http.Header {
	return http.Header{"X-Pyrycode-Server": {id}, "X-Pyrycode-Version": {"0.11.0"}, "User-Agent": {"pyry/0.11.0"}}
}

func phoneHeaders(id string) http.Header {
	return http.Header{"X-Pyrycode-Server": {id}, "X-Pyrycode-Token": {"secret-device-token"},
		"User-Agent": {"pyrycode-mobile/1.0.0"}, "X-Pyrycode-Device-Name": {"test phone"}}
}

func (tr *testRelay) binary(id string) *websocket.Conn {
	return tr.dial("/v1/server", binaryHeaders(id))
}

// phone connects a phone and waits until the relay has registered it.
func (tr *testRelay) phone(id string) *websocket.Conn {
	tr.t.Helper()
	_, before := tr.srv.Counts()
	c := tr.dial("/v1/client", phoneHeaders(id))
	eventually(tr.t, func() bool { _, n := tr.srv.Counts(); return n > before })
	return c
}

// waitBinaries waits until n binaries are registered.
func (tr *testRelay) waitBinaries(n int64) {
	tr.t.Helper()
	eventually(tr.t, func() bool { b, _ := tr.srv.Counts(); return b == n })
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// read returns the next message, which must be text.
func read(t *testing.T, c *websocket.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	op, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if op != websocket.TextMessage {
		t.Fatalf("relay wrote opcode %d, want text", op)
	}
	return msg
}

// send writes a text message.
func send(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expectClose reads until the relay closes c and checks code and reason.
func expectClose(t *testing.T, c *websocket.Conn, code int, reason string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, msg, err := c.ReadMessage()
		if err == nil {
			t.Logf("skipping message before close: %.80s", msg)
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("want close %d %q, got %v", code, reason, err)
		}
		if ce.Code != code || ce.Text != reason {
			t.Fatalf("close = %d %q, want %d %q", ce.Code, ce.Text, code, reason)
		}
		return
	}
}

// expectNoMessage checks that nothing arrives on c for d.
func expectNoMessage(t *testing.T, c *websocket.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, msg, err := c.ReadMessage()
	if err == nil {
		t.Fatalf("unexpected message %q", msg)
	}
	var ne interface{ Timeout() bool }
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("unexpected error while expecting silence: %v", err)
	}
}

// connIDOf sends a frame from phone and returns the conn_id the binary sees.
func connIDOf(t *testing.T, phone, bin *websocket.Conn) string {
	t.Helper()
	send(t, phone, `{"v":2,"type":"noise_init","data":"aGk="}`)
	env := read(t, bin)
	const pre = `{"conn_id":"`
	if !bytes.HasPrefix(env, []byte(pre)) {
		t.Fatalf("envelope %q", env)
	}
	rest := env[len(pre):]
	return string(rest[:bytes.IndexByte(rest, '"')])
}
