package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/pyrycode/pyrycode-relay/internal/acmetest"
)

func TestMain(m *testing.M) {
	// Idle pooled writers park in writerWorker's select until they time out;
	// every in-process pebble leaves its validation task loop behind.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/pyrycode/pyrycode-relay/internal/peer.writerWorker"),
		goleak.IgnoreTopFunction(acmetest.LeakedFunction))
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func noenv(string) string { return "" }

func TestBadConfigurationExitsTwo(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "one of --domain, --tls-cert/--tls-key or --insecure-listen is required"},
		{[]string{"--insecure-listen", ":0", "--domain", "relay.example.com"}, "mutually exclusive"},
		{[]string{"--insecure-listen", ":0", "--tls-cert", "a", "--tls-key", "b"}, "mutually exclusive"},
		{[]string{"--tls-cert", "a.pem"}, "--tls-cert and --tls-key must be given together"},
		{[]string{"--insecure-listen", "nonsense"}, "--insecure-listen"},
		{[]string{"--domain", "localhost"}, "--domain"},
		{[]string{"--insecure-listen", ":0", "--grace", "-1s"}, "--grace must not be negative"},
		{[]string{"--insecure-listen", ":0", "--heartbeat-interval", "0s"}, "--heartbeat-interval must be at least"},
		{[]string{"--insecure-listen", ":0", "--heartbeat-timeout", "-5s"}, "--heartbeat-timeout"},
		{[]string{"--insecure-listen", ":0", "--write-timeout", "0"}, "--write-timeout"},
		{[]string{"--insecure-listen", ":0", "--drain-timeout", "-1s"}, "--drain-timeout"},
		{[]string{"--insecure-listen", ":0", "--max-frame-bytes", "0"}, "--max-frame-bytes"},
		{[]string{"--insecure-listen", ":0", "--max-phones-per-server", "0"}, "--max-phones-per-server"},
		{[]string{"--insecure-listen", ":0", "--phone-queue-bytes", "1000"}, "--phone-queue-bytes"},
		{[]string{"--insecure-listen", ":0", "--log-level", "loud"}, "--log-level"},
		{[]string{"--insecure-listen", ":0", "--grace", "soon"}, "invalid value"},
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
		{[]string{"--insecure-listen", ":0", "extra"}, "unexpected argument"},
		{[]string{"--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem", "--https-listen", "127.0.0.1:0"}, "tlsconf"},
	}
	for _, tc := range cases {
		var out, errb syncBuf
		code := run(context.Background(), tc.args, noenv, &out, &errb, nil)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: stderr %q does not mention %q", tc.args, errb.String(), tc.want)
		}
		if n := strings.Count(errb.String(), "\n"); n != 1 {
			t.Errorf("%v: %d lines on stderr, want exactly one: %q", tc.args, n, errb.String())
		}
	}
}

func TestBadConfigIsOneLine(t *testing.T) {
	var out, errb syncBuf
	if code := run(context.Background(), []string{"--insecure-listen", ":0", "--grace", "-1s"}, noenv, &out, &errb, nil); code != 2 {
		t.Fatalf("exit %d", code)
	}
	if got := strings.Count(errb.String(), "\n"); got != 1 {
		t.Fatalf("want exactly one line, got %q", errb.String())
	}
}

func TestVersion(t *testing.T) {
	var out, errb syncBuf
	if code := run(context.Background(), []string{"--version"}, noenv, &out, &errb, nil); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.HasPrefix(out.String(), "pyrycode-relay ") {
		t.Fatalf("stdout %q", out.String())
	}
}

func TestListenFailureExitsOne(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var out, errb syncBuf
	code := run(context.Background(), []string{"--insecure-listen", ln.Addr().String()}, noenv, &out, &errb, nil)
	if code != 1 || !strings.Contains(errb.String(), "listen") {
		t.Fatalf("exit %d stderr %q", code, errb.String())
	}
}

// relayProc runs run() in a goroutine until the test cancels it.
type relayProc struct {
	cancel context.CancelFunc
	done   chan int
	addrs  map[string]net.Addr
	log    *syncBuf
}

func startRun(t *testing.T, args ...string) *relayProc {
	t.Helper()
	return startRunWith(t, context.Background(), nil, args...)
}

// startRunWith is startRun with a parent context and a hook called with each
// listener's role and address as run reports it (before serving starts).
func startRunWith(t *testing.T, parent context.Context, hook listening, args ...string) *relayProc {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	p := &relayProc{cancel: cancel, done: make(chan int, 1), addrs: map[string]net.Addr{}, log: new(syncBuf)}
	var mu sync.Mutex
	readyc := make(chan struct{}, 4)
	want, metricsSet := 1, false
	for _, a := range args {
		switch a {
		case "--domain":
			want++
		case "--metrics-listen":
			metricsSet = true
		}
	}
	if !metricsSet { // never the fixed default port: tests run side by side
		args = append(args, "--metrics-listen", "127.0.0.1:0")
	}
	for i, a := range args {
		if a == "--metrics-listen" && args[i+1] != "" {
			want++
		}
	}
	go func() {
		p.done <- run(ctx, args, noenv, io.Discard, p.log, func(role string, a net.Addr) {
			if hook != nil {
				hook(role, a)
			}
			mu.Lock()
			p.addrs[role] = a
			mu.Unlock()
			readyc <- struct{}{}
		})
	}()
	for range want {
		select {
		case <-readyc:
		case code := <-p.done:
			t.Fatalf("run exited early with %d: %s", code, p.log.String())
		case <-time.After(10 * time.Second):
			t.Fatal("relay did not start")
		}
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop cancels the run (as SIGTERM would) and returns its exit status.
func (p *relayProc) stop(t *testing.T) int {
	p.cancel()
	select {
	case code := <-p.done:
		p.done <- code
		return code
	case <-time.After(20 * time.Second):
		t.Fatal("relay did not stop")
		return -1
	}
}

func dialWS(t *testing.T, d *websocket.Dialer, url string, h http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := d.Dial(url, h)
	if err != nil {
		t.Fatalf("dial %s: %v %v", url, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func binHeaders(id string) http.Header {
	return http.Header{"X-Pyrycode-Server": {id}, "X-Pyrycode-Version": {"0.11.0"}, "User-Agent": {"pyry/0.11.0"}}
}

func phoneHeaders(id string) http.Header {
	return http.Header{"X-Pyrycode-Server": {id}, "X-Pyrycode-Token": {"tok"}, "User-Agent": {"pyrycode-mobile/1.0"}}
}

func expectCloseCode(t *testing.T, c *websocket.Conn, code int, reason string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code || ce.Text != reason {
			t.Fatalf("got %v, want close %d %q", err, code, reason)
		}
		return
	}
}

// waitHealth polls /healthz until it reports the wanted counts.
func waitHealth(t *testing.T, client *http.Client, url string, binaries, phones int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			var h struct {
				Binaries int `json:"connected_binaries"`
				Phones   int `json:"connected_phones"`
			}
			json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if h.Binaries == binaries && h.Phones == phones {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz never reported %d binaries, %d phones (last err %v)", binaries, phones, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestInsecureServeAndGracefulShutdown(t *testing.T) {
	p := startRun(t, "--insecure-listen", "127.0.0.1:0", "--log-level", "debug")
	addr := p.addrs["insecure"].String()
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	bin := dialWS(t, d, "ws://"+addr+"/v1/server", binHeaders("srv-a"))
	waitHealth(t, http.DefaultClient, "http://"+addr+"/healthz", 1, 0)
	ph := dialWS(t, d, "ws://"+addr+"/v1/client", phoneHeaders("srv-a"))
	waitHealth(t, http.DefaultClient, "http://"+addr+"/healthz", 1, 1)

	ph.WriteMessage(websocket.TextMessage, []byte(`{"v":2}`))
	bin.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := bin.ReadMessage(); err != nil || !strings.HasSuffix(string(msg), `"frame":{"v":2}}`) {
		t.Fatalf("binary got %q, %v", msg, err)
	}

	var wg sync.WaitGroup
	for _, c := range []*websocket.Conn{bin, ph} {
		wg.Add(1)
		go func() { defer wg.Done(); expectCloseCode(t, c, 1001, "shutting down") }()
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	wg.Wait()
	log := p.log.String()
	for _, secret := range []string{"tok", `{"v":2}`} {
		if strings.Contains(log, `"`+secret+`"`) {
			t.Errorf("log contains %q: %s", secret, log)
		}
	}
	if !strings.Contains(log, `"msg":"relay_stopped"`) {
		t.Errorf("no relay_stopped event in log")
	}
}

func TestHeaderReadTimeout(t *testing.T) {
	p := startRun(t, "--insecure-listen", "127.0.0.1:0", "--header-timeout", "200ms")
	c, err := net.Dial("tcp", p.addrs["insecure"].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /v1/server HTTP/1.1\r\nHost: x\r\n") // never finishes its headers
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = io.Copy(io.Discard, c)
	if err != nil {
		t.Fatalf("connection not closed by the relay: %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("closed after %v", el)
	}
}

// testCert makes a self-signed ECDSA certificate for names and returns the
// PEM-encoded certificate, key and a pool that trusts it.
func testCert(t *testing.T, names ...string) (certPEM, keyPEM []byte, key *ecdsa.PrivateKey, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(90 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), key, pool
}

func TestTLSCertMode(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, _, pool := testCert(t, "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	p := startRun(t, "--tls-cert", certFile, "--tls-key", keyFile, "--https-listen", "127.0.0.1:0")
	addr := p.addrs["https"].String()

	tc := &tls.Config{RootCAs: pool}
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: tc}
	bin := dialWS(t, d, "wss://"+addr+"/v1/server", binHeaders("srv-tls"))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer client.CloseIdleConnections()
	waitHealth(t, client, "https://"+addr+"/healthz", 1, 0)
	ph := dialWS(t, d, "wss://"+addr+"/v1/client", phoneHeaders("srv-tls"))
	waitHealth(t, client, "https://"+addr+"/healthz", 1, 1)
	ph.WriteMessage(websocket.TextMessage, []byte(`"hello"`))
	bin.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := bin.ReadMessage(); err != nil || !strings.HasSuffix(string(msg), `"frame":"hello"}`) {
		t.Fatalf("binary got %q, %v", msg, err)
	}

	old := &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}
	if c, err := tls.Dial("tcp", addr, old); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake accepted")
	}
}

func TestDomainModeWithSeededCache(t *testing.T) {
	const domain = "relay.example.test"
	cache := filepath.Join(t.TempDir(), "certs")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	certPEM, _, key, pool := testCert(t, domain)
	kder, _ := x509.MarshalECPrivateKey(key)
	// autocert's cache layout for an ECDSA certificate: key then chain, under the bare domain.
	var seeded bytes.Buffer
	pem.Encode(&seeded, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	seeded.Write(certPEM)
	os.WriteFile(filepath.Join(cache, domain), seeded.Bytes(), 0o600)

	// A CA that must never be contacted: the cached certificate suffices.
	ca := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("ACME CA contacted: %s %s", r.Method, r.URL)
		w.WriteHeader(500)
	})}
	caLn, _ := net.Listen("tcp", "127.0.0.1:0")
	go ca.Serve(caLn)
	defer ca.Close()

	p := startRun(t, "--domain", domain, "--cert-cache", cache,
		"--https-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
		"--acme-directory", "http://"+caLn.Addr().String()+"/directory")
	if st, _ := os.Stat(cache); st.Mode().Perm() != 0o700 {
		t.Errorf("cert cache mode %v, want 0700", st.Mode().Perm())
	}
	httpsAddr := p.addrs["https"].String()
	tc := &tls.Config{RootCAs: pool, ServerName: domain}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer client.CloseIdleConnections()

	get := func(host string) int {
		req, _ := http.NewRequest("GET", "https://"+httpsAddr+"/healthz", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET with Host %s: %v", host, err)
		}
		resp.Body.Close()
		if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
			t.Fatalf("weak TLS: %+v", resp.TLS)
		}
		return resp.StatusCode
	}
	if code := get(domain); code != 200 {
		t.Errorf("right Host: %d", code)
	}
	if code := get("other.example.test"); code != http.StatusMisdirectedRequest {
		t.Errorf("wrong Host: %d, want 421", code)
	}

	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: tc}
	u := "wss://" + httpsAddr + "/v1/server"
	h := binHeaders("srv-domain")
	h.Set("Host", domain)
	c := dialWS(t, d, u, h)
	c.Close()

	// The ACME http-01 listener answers nothing but challenges: 404, empty, no redirect.
	resp, err := http.Get("http://" + p.addrs["acme-http"].String() + "/v1/server")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || len(body) != 0 {
		t.Errorf("http listener: %d %q", resp.StatusCode, body)
	}
}

// readLines is used to surface the relay log on failure.
func readLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func TestMetricsListener(t *testing.T) {
	p := startRun(t, "--insecure-listen", "127.0.0.1:0")
	base := "http://" + p.addrs["metrics"].String()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`pyrycode_relay_connections{role="binary"} 0`, "pyrycode_relay_forward_seconds_bucket", "process_resident_memory_bytes"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The relay's own listener does not serve metrics.
	resp, err = http.Get("http://" + p.addrs["insecure"].String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("relay listener /metrics: %d", resp.StatusCode)
	}
}

func TestMetricsListenMustBeLoopback(t *testing.T) {
	var out, errb syncBuf
	code := run(context.Background(), []string{"--insecure-listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0"}, noenv, &out, &errb, nil)
	if code != 2 || !strings.Contains(errb.String(), "--metrics-public") {
		t.Fatalf("exit %d stderr %q", code, errb.String())
	}
}

func TestInvalidPushCredentialsExitTwo(t *testing.T) {
	secret := `{"type":"service_account","private_key":"NOT-A-KEY-s3cr3t"}`
	getenv := func(k string) string {
		if k == "PYRYCODE_RELAY_FCM_CREDENTIALS" {
			return secret
		}
		return ""
	}
	var out, errb syncBuf
	code := run(context.Background(), []string{"--insecure-listen", "127.0.0.1:0"}, getenv, &out, &errb, nil)
	if code != 2 {
		t.Fatalf("exit %d", code)
	}
	msg := errb.String()
	if !strings.Contains(msg, "PYRYCODE_RELAY_FCM_CREDENTIALS") || strings.Contains(msg, "s3cr3t") || strings.Count(msg, "\n") != 1 {
		t.Fatalf("stderr %q", msg)
	}
}

func TestPushMetricsExportedAtZero(t *testing.T) {
	p := startRun(t, "--insecure-listen", "127.0.0.1:0")
	resp, err := http.Get("http://" + p.addrs["metrics"].String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`pyrycode_relay_push_wakes_total{outcome="off",platform="fcm"} 0`, "pyrycode_relay_push_seconds_bucket"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// Plain HTTP connections (an idle socket, a request whose body never
// finishes) must not hold up the shutdown: every WebSocket gets its 1001
// promptly and the process exits 0.
func TestShutdownIsNotHeldByHTTPStragglers(t *testing.T) {
	p := startRun(t, "--insecure-listen", "127.0.0.1:0", "--drain-timeout", "10s")
	addr := p.addrs["insecure"].String()
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	bin := dialWS(t, d, "ws://"+addr+"/v1/server", binHeaders("srv-straggle"))
	waitHealth(t, http.DefaultClient, "http://"+addr+"/healthz", 1, 0)
	for _, pre := range []string{"", "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\""} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, pre)
	}
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); expectCloseCode(t, bin, 1001, "shutting down") }()
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	<-done
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("shutdown took %v", el)
	}
}
