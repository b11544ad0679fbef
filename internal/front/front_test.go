package front

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/testcert"
)

type ctxKey struct{}

// echoServer is a handler for tests: /ws upgrades (peer.Upgrade) and echoes
// raw bytes, reporting on which path it ran; /refuse answers 429 with a
// header; /panic panics; anything else answers 200 "ok".
type echoServer struct {
	fast chan bool // per request: did it run on the fast path
}

func (e *echoServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, fast := w.(*writer)
	select {
	case e.fast <- fast:
	default:
	}
	switch r.URL.Path {
	case "/ws":
		if r.Context().Value(ctxKey{}) != "conn" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		nc, pending, err := peer.Upgrade(w, r, time.Second)
		if err != nil {
			return
		}
		go func() {
			defer nc.Close()
			if len(pending) > 0 {
				if _, err := nc.Write(pending); err != nil {
					return
				}
			}
			_, _ = io.Copy(nc, nc)
		}()
	case "/raw":
		// Hijacked with no deadline of its own set or cleared.
		nc, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		if n := brw.Reader.Buffered(); n > 0 {
			nc.Close()
			return
		}
		go func() {
			defer nc.Close()
			if _, err := io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"); err != nil {
				return
			}
			_, _ = io.Copy(nc, nc)
		}()
	case "/refuse":
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	case "/panic":
		panic("test panic")
	default:
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
	}
}

func want(r *http.Request) bool {
	return (r.URL.Path == "/ws" || r.URL.Path == "/raw" || r.URL.Path == "/refuse" || r.URL.Path == "/panic") && peer.CheckUpgrade(r)
}

type fixture struct {
	addr string
	srv  *http.Server
	ln   *Listener
	h    *echoServer
	tls  *tls.Config // the client's, when the server speaks TLS
}

func start(t *testing.T, useTLS bool, tweak ...func(*http.Server)) *fixture {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{addr: tcp.Addr().String(), h: &echoServer{fast: make(chan bool, 16)}}
	f.srv = &http.Server{
		Handler:           f.h,
		ReadHeaderTimeout: 300 * time.Millisecond,
		ReadTimeout:       2 * time.Second,
		WriteTimeout:      2 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, ctxKey{}, "conn")
		},
	}
	for _, tw := range tweak {
		tw(f.srv)
	}
	var ln net.Listener = tcp
	if useTLS {
		cert := testcert.New(t, "127.0.0.1")
		ln = peer.NewTLSListener(tcp, &tls.Config{Certificates: []tls.Certificate{cert}})
		f.tls = &tls.Config{RootCAs: testcert.Pool(cert), ServerName: "127.0.0.1"}
	}
	f.ln = New(ln, f.srv, want)
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(f.ln) }()
	t.Cleanup(func() {
		f.srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

func (f *fixture) dial(t *testing.T) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", f.addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if f.tls != nil {
		tc := tls.Client(nc, f.tls)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		nc = tc
	}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return nc
}

// fastPath reports on which path the last request ran.
func (f *fixture) fastPath(t *testing.T) bool {
	t.Helper()
	select {
	case v := <-f.h.fast:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never ran")
		return false
	}
}

func upgradeHead(path string, extra string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + extra + "\r\n"
}

// readResponse reads one response head (and no body).
func readResponse(t *testing.T, br *bufio.Reader) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	return resp
}

// An upgrade runs on the fast path; bytes sent with the head reach the
// upgraded connection first and in order.
func TestUpgradeOnTheFastPath(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[useTLS], func(t *testing.T) {
			f := start(t, useTLS)
			nc := f.dial(t)
			if _, err := io.WriteString(nc, upgradeHead("/ws", "")+"early bytes|"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(nc)
			resp := readResponse(t, br)
			if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
				t.Fatalf("response %d %v", resp.StatusCode, resp.Header)
			}
			if !f.fastPath(t) {
				t.Error("the upgrade went through net/http")
			}
			if _, err := io.WriteString(nc, "later"); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len("early bytes|later"))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != "early bytes|later" {
				t.Fatalf("echo %q, %v", got, err)
			}
		})
	}
}

// Anything that is not an upgrade goes to net/http, which keeps the
// connection alive between requests, over TLS too.
func TestOtherRequestsGoToNetHTTP(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[useTLS], func(t *testing.T) {
			f := start(t, useTLS)
			nc := f.dial(t)
			br := bufio.NewReader(nc)
			for i := range 2 {
				if _, err := io.WriteString(nc, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				resp := readResponse(t, br)
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(body) != "ok" {
					t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
				}
				if f.fastPath(t) {
					t.Errorf("request %d ran on the fast path", i)
				}
			}
		})
	}
}

// Heads the fast path is not sure of go to net/http, which answers them
// as it always has.
func TestUncertainHeadsGoToNetHTTP(t *testing.T) {
	big := "X-Big: " + strings.Repeat("a", 5000) + "\r\n"
	cases := []struct {
		name, head string
		status     int // 0: upgraded (101)
	}{
		{"large head, still an upgrade", upgradeHead("/ws", big), 101},
		{"head over MaxHeaderBytes", upgradeHead("/ws", "X-Huge: "+strings.Repeat("a", 30000)+"\r\n"), 431},
		{"no Host", strings.Replace(upgradeHead("/ws", ""), "Host: 127.0.0.1\r\n", "", 1), 400},
		{"two Hosts", upgradeHead("/ws", "Host: other\r\n"), 400},
		{"bad Host", strings.Replace(upgradeHead("/ws", ""), "Host: 127.0.0.1", "Host: a b", 1), 400},
		{"line without a colon", upgradeHead("/ws", "Bad Header\r\n"), 400},
		{"bad header name", upgradeHead("/ws", "Bad(Name): x\r\n"), 400},
		{"folded line", upgradeHead("/ws", "X-A: 1\r\n  folded\r\n"), 101},
		{"HTTP/1.0", strings.Replace(upgradeHead("/ws", ""), "HTTP/1.1", "HTTP/1.0", 1), 400},
		{"Expect", upgradeHead("/ws", "Expect: 100-continue\r\n"), 101},
		{"a body", upgradeHead("/ws", "Content-Length: 0\r\n"), 101},
		{"not an upgrade for a hijacking path", "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := start(t, false)
			nc := f.dial(t)
			if _, err := io.WriteString(nc, c.head); err != nil {
				t.Fatal(err)
			}
			resp := readResponse(t, bufio.NewReader(nc))
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			select {
			case fast := <-f.h.fast:
				if fast {
					t.Error("ran on the fast path")
				}
			case <-time.After(100 * time.Millisecond):
				// net/http refused it before any handler ran.
			}
		})
	}
}

// A refusal on the fast path is a complete response, then the connection
// is closed.
func TestRefusalOnTheFastPath(t *testing.T) {
	f := start(t, false)
	nc := f.dial(t)
	if _, err := io.WriteString(nc, upgradeHead("/refuse", "")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp := readResponse(t, br)
	if !f.fastPath(t) {
		t.Error("not on the fast path")
	}
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" ||
		resp.ContentLength != 0 || !resp.Close || resp.Header.Get("Date") == "" {
		t.Fatalf("response %d %v (length %d)", resp.StatusCode, resp.Header, resp.ContentLength)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the refusal: %v, want EOF", err)
	}
}

// A connection that sends nothing, or half a head, within
// ReadHeaderTimeout is closed without an answer, as net/http does.
func TestSlowHeadsAreClosed(t *testing.T) {
	for _, sent := range []string{"", "GET /ws HTTP/1.1\r\nHost: x\r\n"} {
		f := start(t, false)
		nc := f.dial(t)
		if _, err := io.WriteString(nc, sent); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(nc)
		if err != nil || len(got) != 0 {
			t.Errorf("sent %q: read %q, %v; want a silent close", sent, got, err)
		}
	}
}

// A handler's panic costs its own connection only.
func TestPanicClosesOnlyItsConnection(t *testing.T) {
	f := start(t, false)
	nc := f.dial(t)
	if _, err := io.WriteString(nc, upgradeHead("/panic", "")); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(nc); err != nil || len(got) != 0 {
		t.Fatalf("read %q, %v; want a close", got, err)
	}
	f.fastPath(t)
	nc2 := f.dial(t)
	if _, err := io.WriteString(nc2, upgradeHead("/ws", "")); err != nil {
		t.Fatal(err)
	}
	if resp := readResponse(t, bufio.NewReader(nc2)); resp.StatusCode != 101 {
		t.Fatalf("next upgrade: %d", resp.StatusCode)
	}
}

// Close stops accepting and closes connections still in their head.
func TestCloseEndsPendingHeads(t *testing.T) {
	f := start(t, false, func(s *http.Server) { s.ReadHeaderTimeout = time.Minute })
	nc := f.dial(t)
	if _, err := io.WriteString(nc, "GET /ws HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	// Wait until the listener holds it.
	for i := 0; ; i++ {
		f.ln.mu.Lock()
		n := len(f.ln.pending)
		f.ln.mu.Unlock()
		if n == 1 {
			break
		}
		if i == 500 {
			t.Fatal("the connection never reached its head")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := f.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Unread bytes make the close a reset.
	if got, err := io.ReadAll(nc); len(got) != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read %q, %v; want a close", got, err)
	}
	if c, err := net.DialTimeout("tcp", f.addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still accepting after Close")
	}
}

func TestPlainHead(t *testing.T) {
	ok := upgradeHead("/ws", "")
	for _, c := range []struct {
		head string
		want bool
	}{
		{ok, true},
		{strings.Replace(ok, "GET", "POST", 1), false},
		{strings.Replace(ok, "Host:", "host:", 1), true},
		{strings.Replace(ok, "Host: 127.0.0.1", "HOST:127.0.0.1  ", 1), true},
		{upgradeHead("/ws", "Transfer-Encoding: chunked\r\n"), false},
		{upgradeHead("/ws", "X-A: \x01\r\n"), false},
		{upgradeHead("/ws", ": empty name\r\n"), false},
	} {
		if got := plainHead([]byte(c.head)); got != c.want {
			t.Errorf("plainHead(%q) = %v, want %v", c.head, got, c.want)
		}
	}
}

// The head's read deadline (and the refusal's write deadline) do not
// outlive the hijack: an upgraded connection idle for longer than
// ReadHeaderTimeout and WriteTimeout still carries frames both ways.
func TestHijackClearsDeadlines(t *testing.T) {
	f := start(t, false, func(s *http.Server) {
		s.ReadHeaderTimeout = 100 * time.Millisecond
		s.WriteTimeout = 100 * time.Millisecond
	})
	nc := f.dial(t)
	if _, err := io.WriteString(nc, upgradeHead("/raw", "")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	if resp := readResponse(t, br); resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	time.Sleep(400 * time.Millisecond)
	if _, err := io.WriteString(nc, "after a pause"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("after a pause"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "after a pause" {
		t.Fatalf("echo %q, %v", got, err)
	}
}
