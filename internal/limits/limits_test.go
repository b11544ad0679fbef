package limits

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

func upgrades(e *env, ep relay.Endpoint, o relay.Outcome) int64 { return e.srv.Stats().Upgrades(ep, o) }

func TestUpgradeRatePerIP(t *testing.T) {
	clk := newClock()
	e := startEnv(t, Config{UpgradeRate: 0.5, UpgradeBurst: 3, Now: clk.Now})
	const a, b = "127.0.0.2", "127.0.0.3"

	for i := range 3 {
		if ex := e.request(t, a, phoneReq()); ex.status != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade %d within the burst: status %d", i+1, ex.status)
		}
	}
	ex := e.request(t, a, phoneReq())
	wantStatus(t, ex, http.StatusTooManyRequests)
	if n := upgrades(e, relay.EndpointClient, relay.OutcomeRateLimited); n != 1 {
		t.Fatalf("client rate_limited = %d, want 1", n)
	}
	// The bucket is per IP, not per endpoint.
	wantStatus(t, e.request(t, a, binaryReq()), http.StatusTooManyRequests)
	if n := upgrades(e, relay.EndpointServer, relay.OutcomeRateLimited); n != 1 {
		t.Fatalf("server rate_limited = %d, want 1", n)
	}

	// Another address has its own bucket.
	wantStatus(t, e.request(t, b, binaryReq()), http.StatusSwitchingProtocols)

	// /healthz and other paths are never rate limited.
	for range 10 {
		wantStatus(t, e.request(t, a, getReq("/healthz")), http.StatusOK)
	}
	wantStatus(t, e.request(t, a, getReq("/nope")), http.StatusNotFound)

	// Two seconds refill one token at 0.5/s: exactly one more upgrade.
	clk.Advance(2 * time.Second)
	wantStatus(t, e.request(t, a, phoneReq()), http.StatusSwitchingProtocols)
	wantStatus(t, e.request(t, a, phoneReq()), http.StatusTooManyRequests)
	if n := upgrades(e, relay.EndpointClient, relay.OutcomeRateLimited); n != 2 {
		t.Fatalf("client rate_limited = %d, want 2", n)
	}
	if n := upgrades(e, relay.EndpointClient, relay.OutcomeIPConnCap) + upgrades(e, relay.EndpointClient, relay.OutcomeConnCap); n != 0 {
		t.Fatalf("cap refusals counted: %d", n)
	}
}

func TestRateLimitKeepAliveConnectionStaysOpen(t *testing.T) {
	e := startEnv(t, Config{UpgradeBurst: 1})
	nc := dialFrom(t, "127.0.0.4", e.addr)
	wantStatus(t, send(t, nc, nil, getReq("/v1/client")), http.StatusBadRequest) // not a WebSocket: took the token
	wantStatus(t, send(t, nc, nil, getReq("/v1/client")), http.StatusTooManyRequests)
	// Same connection, still usable: a rate refusal is not a connection refusal.
	wantStatus(t, send(t, nc, nil, getReq("/healthz")), http.StatusOK)
}

func TestPerIPCapCountsHeaderPhase(t *testing.T) {
	e := startEnv(t, Config{MaxConnsPerIP: 3})
	const a, b = "127.0.0.5", "127.0.0.6"
	ip := netip.MustParseAddr(a)

	// Three connections that never send a byte hold all of a's slots.
	var idle []net.Conn
	for range 3 {
		idle = append(idle, dialFrom(t, a, e.addr))
	}
	eventually(t, "idle connections counted", func() bool { return e.lim.ConnsFrom(ip) == 3 })

	ex := e.request(t, a, binaryReq())
	wantStatus(t, ex, http.StatusTooManyRequests)
	wantClosed(t, ex)
	if n := upgrades(e, relay.EndpointServer, relay.OutcomeIPConnCap); n != 1 {
		t.Fatalf("server ip_connection_cap = %d, want 1", n)
	}
	// Other paths get the same answer but are not upgrade outcomes;
	// /healthz is never refused (contract §9): answered, then closed.
	wantStatus(t, e.request(t, a, getReq("/nowhere")), http.StatusTooManyRequests)
	hz := e.request(t, a, getReq("/healthz"))
	wantStatus(t, hz, http.StatusOK)
	wantClosed(t, hz)
	if n := upgrades(e, relay.EndpointServer, relay.OutcomeIPConnCap) + upgrades(e, relay.EndpointClient, relay.OutcomeIPConnCap); n != 1 {
		t.Fatalf("ip_connection_cap total = %d, want 1", n)
	}
	if got := e.lim.ConnsFrom(ip); got != 3 {
		t.Fatalf("refused connections took slots: %d", got)
	}

	// Another address is unaffected.
	wantStatus(t, e.request(t, b, binaryReq()), http.StatusSwitchingProtocols)

	// Closing one idle connection frees a slot for a real upgrade, which
	// then keeps it.
	idle[0].Close()
	eventually(t, "slot freed", func() bool { return e.lim.ConnsFrom(ip) == 2 })
	up := e.request(t, a, binaryReq())
	wantStatus(t, up, http.StatusSwitchingProtocols)
	e.waitBinaries(t, 2)
	if got := e.lim.ConnsFrom(ip); got != 3 {
		t.Fatalf("upgraded connection not counted: %d", got)
	}
	wantStatus(t, e.request(t, a, binaryReq()), http.StatusTooManyRequests)

	// Closing the WebSocket frees its slot too.
	up.nc.Close()
	eventually(t, "websocket slot freed", func() bool { return e.lim.ConnsFrom(ip) == 2 })
	for _, c := range idle[1:] {
		c.Close()
	}
	eventually(t, "all of a's slots freed", func() bool { return e.lim.ConnsFrom(ip) == 0 })
}

func (e *env) waitBinaries(t *testing.T, n int64) {
	t.Helper()
	eventually(t, "binaries registered", func() bool { b, _ := e.srv.Counts(); return b == n })
}

func TestGlobalCap(t *testing.T) {
	e := startEnv(t, Config{MaxConns: 2})
	b1 := e.request(t, "127.0.0.7", binaryReq())
	wantStatus(t, b1, http.StatusSwitchingProtocols)
	wantStatus(t, e.request(t, "127.0.0.8", binaryReq()), http.StatusSwitchingProtocols)
	e.waitBinaries(t, 2)
	if byIP, total := e.lim.Stats(); byIP != 2 || total != 2 {
		t.Fatalf("Stats = %d, %d; want 2, 2", byIP, total)
	}

	ex := e.request(t, "127.0.0.9", phoneReq())
	wantStatus(t, ex, http.StatusServiceUnavailable)
	wantClosed(t, ex)
	if n := upgrades(e, relay.EndpointClient, relay.OutcomeConnCap); n != 1 {
		t.Fatalf("client connection_cap = %d, want 1", n)
	}
	wantStatus(t, e.request(t, "127.0.0.9", getReq("/nowhere")), http.StatusServiceUnavailable)
	wantStatus(t, e.request(t, "127.0.0.9", getReq("/healthz")), http.StatusOK)
	if n := upgrades(e, relay.EndpointClient, relay.OutcomeConnCap) + upgrades(e, relay.EndpointServer, relay.OutcomeConnCap); n != 1 {
		t.Fatalf("connection_cap total = %d, want 1", n)
	}

	b1.nc.Close()
	eventually(t, "global slot freed", func() bool { _, total := e.lim.Stats(); return total == 1 })
	wantStatus(t, e.request(t, "127.0.0.9", binaryReq()), http.StatusSwitchingProtocols)
}

func TestCloseReleasesOnce(t *testing.T) {
	lim, err := New(Config{MaxConnsPerIP: 2, MaxConns: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lln := lim.Listener(ln)
	accept := func(from string) net.Conn {
		t.Helper()
		dialFrom(t, from, ln.Addr().String())
		c, err := lln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1, c2, c3 := accept("127.0.0.10"), accept("127.0.0.10"), accept("127.0.0.10")
	if byIP, total := lim.Stats(); byIP != 2 || total != 2 {
		t.Fatalf("Stats = %d, %d; want 2, 2 (third over the per-IP cap)", byIP, total)
	}
	for range 3 {
		c1.Close()
		c3.Close() // refused: holds nothing
	}
	if byIP, total := lim.Stats(); byIP != 1 || total != 1 {
		t.Fatalf("after closing twice: Stats = %d, %d; want 1, 1", byIP, total)
	}
	c4 := accept("127.0.0.11")
	c2.Close()
	c4.Close()
	c2.Close()
	if byIP, total := lim.Stats(); byIP != 0 || total != 0 {
		t.Fatalf("all closed: Stats = %d, %d", byIP, total)
	}
	if lim.ConnsFrom(netip.MustParseAddr("127.0.0.10")) != 0 {
		t.Fatal("per-IP entry left behind")
	}
	if len(lim.byIP) != 0 {
		t.Fatalf("byIP map not emptied: %v", lim.byIP)
	}
}

// TestUpgradedConnExposesTCPConn checks that a hijacked connection offers
// its *net.TCPConn for writev, and that its slot outlives the handler.
func TestUpgradedConnExposesTCPConn(t *testing.T) {
	lim, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan net.Conn, 1)
	hs := &http.Server{
		ConnContext: lim.ConnContext,
		Handler: lim.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			nc, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			got <- nc
		})),
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(lim.Listener(ln)) }()
	defer func() { hs.Close(); <-done }()

	nc := dialFrom(t, "127.0.0.12", ln.Addr().String())
	if _, err := nc.Write([]byte(getReq("/x"))); err != nil {
		t.Fatal(err)
	}
	hj := <-got
	tc, ok := hj.(interface{ TCPConn() *net.TCPConn })
	if !ok || tc.TCPConn() == nil {
		t.Fatalf("hijacked %T does not expose its TCP connection", hj)
	}
	if a := hj.RemoteAddr().(*net.TCPAddr); !a.IP.Equal(net.ParseIP("127.0.0.12")) {
		t.Fatalf("RemoteAddr = %v", a)
	}
	if _, total := lim.Stats(); total != 1 {
		t.Fatalf("hijacked connection not counted: total %d", total)
	}
	hj.Close()
	if _, total := lim.Stats(); total != 0 {
		t.Fatalf("total %d after close", total)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{UpgradeRate: -1}, nil); err == nil || !strings.Contains(err.Error(), "--upgrade-rate") {
		t.Fatalf("New with a negative rate: %v", err)
	}
	if _, err := New(Config{ProxyProtocol: true}, nil); err == nil {
		t.Fatal("New with --proxy-protocol and no trusted proxies succeeded")
	}
}

// TestTLSHandshakePhaseCounts serves the relay over TLS: connections that
// have not even started their handshake count toward the per-IP cap, and
// the verdict is found through the *tls.Conn.
func TestTLSHandshakePhaseCounts(t *testing.T) {
	srv := relay.New(relay.Config{CloseWait: 200 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	lim, err := New(Config{MaxConnsPerIP: 2}, srv.Stats())
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(lim.Middleware(srv))
	hs.Listener = lim.Listener(hs.Listener)
	hs.Config.ConnContext = lim.ConnContext
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.StartTLS()
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	addr := hs.Listener.Addr().String()
	pool := x509.NewCertPool()
	pool.AddCert(hs.Certificate())
	dialTLS := func(from string) net.Conn {
		t.Helper()
		tc := tls.Client(dialFrom(t, from, addr), &tls.Config{RootCAs: pool, ServerName: "example.com"})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return tc
	}

	const a = "127.0.0.50"
	dialFrom(t, a, addr)
	dialFrom(t, a, addr) // two silent connections: a's cap is reached
	eventually(t, "silent connections counted", func() bool { return lim.ConnsFrom(netip.MustParseAddr(a)) == 2 })
	ex := send(t, dialTLS(a), nil, phoneReq())
	wantStatus(t, ex, http.StatusTooManyRequests)
	if n := srv.Stats().Upgrades(relay.EndpointClient, relay.OutcomeIPConnCap); n != 1 {
		t.Fatalf("client ip_connection_cap = %d, want 1", n)
	}
	wantStatus(t, send(t, dialTLS("127.0.0.51"), nil, binaryReq()), http.StatusSwitchingProtocols)
}
