package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pyrycode/pyrycode-relay/internal/acmetest"
)

// These tests run the relay in --domain mode against pebble, Let's
// Encrypt's test CA, in this process: the relay registers, orders, answers
// the http-01 challenge on its --http-listen handler (pebble really fetches
// it, resolving the domain through a test DNS responder), and serves what
// was issued. Everything is on 127.0.0.1.

const acmeDomain = "relay.example.test"

// acmeWait bounds every wait for issuance; pebble issues in a second or two.
const acmeWait = 30 * time.Second

// startACMERelay runs the relay in --domain mode against pb, with cache as
// the certificate cache, and points pebble's http-01 requests at the
// relay's challenge listener before the first attempt.
func startACMERelay(t *testing.T, pb *acmetest.CA, cache string, tune acmeTuning, extra ...string) *relayProc {
	t.Helper()
	args := append([]string{"--domain", acmeDomain, "--cert-cache", cache,
		"--https-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
		"--acme-directory", pb.DirectoryURL, "--acme-ca-cert", pb.APICertFile,
		"--acme-email", "ops@example.test"}, extra...)
	ctx := context.WithValue(context.Background(), acmeTuningKey{}, tune)
	return startRunWith(t, ctx, func(role string, a net.Addr) {
		if role == "acme-http" {
			pb.SetHTTPTarget(a.String())
		}
	}, args...)
}

// leafFrom handshakes with the relay as a client that trusts only pebble's
// root and returns the leaf certificate it was served.
func leafFrom(t *testing.T, addr string, roots *x509.CertPool) (*x509.Certificate, error) {
	t.Helper()
	d := &net.Dialer{Timeout: acmeWait}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: acmeDomain})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// logEvents returns the JSON log lines whose msg is event, decoded.
func logEvents(t *testing.T, log, event string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range readLines(log) {
		if !strings.Contains(line, `"msg":"`+event+`"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// waitEvents waits until the log holds at least n events named event and
// returns them.
func waitEvents(t *testing.T, p *relayProc, event string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(acmeWait)
	for {
		if ev := logEvents(t, p.log.String(), event); len(ev) >= n {
			return ev
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d %s events in time; log:\n%s", n, event, p.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scrape returns the relay's /metrics text.
func scrape(t *testing.T, p *relayProc) string {
	t.Helper()
	resp, err := http.Get("http://" + p.addrs["metrics"].String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// checkLogClean fails if the log carries key material or anything shaped
// like a challenge token or key thumbprint (43 base64url characters).
func checkLogClean(t *testing.T, log string) {
	t.Helper()
	if strings.Contains(log, "PRIVATE KEY") {
		t.Error("log contains a private key")
	}
	if m := regexp.MustCompile(`[A-Za-z0-9_-]{40,}`).FindString(log); m != "" {
		t.Errorf("log contains a token-like string %q", m)
	}
}

func TestACMEIssuesServesAndRestartsFromCache(t *testing.T) {
	t.Parallel()
	pb := acmetest.Start(t, acmetest.Options{Domain: acmeDomain})
	cache := filepath.Join(t.TempDir(), "certs")
	p := startACMERelay(t, pb, cache, acmeTuning{})
	httpsAddr := p.addrs["https"].String()

	// The first handshake waits for the issuance under way.
	leaf, err := leafFrom(t, httpsAddr, pb.Roots)
	if err != nil {
		t.Fatalf("handshake: %v\nlog:\n%s", err, p.log.String())
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != acmeDomain {
		t.Errorf("certificate names %q, want [%s]", leaf.DNSNames, acmeDomain)
	}
	if n := pb.Orders(); n != 1 {
		t.Errorf("%d orders at the CA, want 1", n)
	}
	if ev := waitEvents(t, p, "acme_issued", 1); ev[0]["domain"] != acmeDomain {
		t.Errorf("acme_issued event %v", ev[0])
	}

	// The cache holds the account key and the certificate, privately.
	st, err := os.Stat(cache)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory: %v, mode %v; want 0700", err, st.Mode().Perm())
	}
	entries, err := os.ReadDir(cache)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Errorf("cache entry %s: mode %v, want a 0600 file", e.Name(), fi.Mode())
		}
	}
	if !names[acmeDomain] || !names["acme_account+key"] || !names[acmeDomain+"+directory"] || len(names) != 3 {
		t.Errorf("cache holds %v, want exactly the certificate, its directory record and the account key", names)
	}
	if rec, err := os.ReadFile(filepath.Join(cache, acmeDomain+"+directory")); err != nil || string(rec) != pb.DirectoryURL+"\n" {
		t.Errorf("directory record %q (%v), want %s", rec, err, pb.DirectoryURL)
	}

	// HTTPS: the right Host is served, another gets 421. The client
	// reaches the domain at the relay's address.
	tc := &tls.Config{RootCAs: pb.Roots, ServerName: acmeDomain}
	dialer := &net.Dialer{Timeout: acmeWait}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", httpsAddr)
		}}}
	defer client.CloseIdleConnections()
	get := func(host string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "https://"+acmeDomain+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET with Host %s: %v", host, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(acmeDomain); code != http.StatusOK {
		t.Errorf("Host %s: %d, want 200", acmeDomain, code)
	}
	if code := get("other.example.test"); code != http.StatusMisdirectedRequest {
		t.Errorf("foreign Host: %d, want 421", code)
	}

	// A binary and a phone pair over WSS, both ways.
	d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: tc}
	bh, ph := binHeaders("srv-acme"), phoneHeaders("srv-acme")
	bh.Set("Host", acmeDomain)
	ph.Set("Host", acmeDomain)
	bin := dialWS(t, d, "wss://"+httpsAddr+"/v1/server", bh)
	waitHealth(t, client, "https://"+acmeDomain+"/healthz", 1, 0)
	phone := dialWS(t, d, "wss://"+httpsAddr+"/v1/client", ph)
	waitHealth(t, client, "https://"+acmeDomain+"/healthz", 1, 1)
	if err := phone.WriteMessage(websocket.TextMessage, []byte(`{"v":2,"n":1}`)); err != nil {
		t.Fatal(err)
	}
	bin.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := bin.ReadMessage()
	if err != nil {
		t.Fatalf("binary read: %v", err)
	}
	var env struct {
		ConnID string          `json:"conn_id"`
		Frame  json.RawMessage `json:"frame"`
	}
	if err := json.Unmarshal(msg, &env); err != nil || env.ConnID == "" || string(env.Frame) != `{"v":2,"n":1}` {
		t.Fatalf("binary got %q (%v)", msg, err)
	}
	if err := bin.WriteMessage(websocket.TextMessage, []byte(`{"conn_id":"`+env.ConnID+`","frame":{"v":2,"n":2}}`)); err != nil {
		t.Fatal(err)
	}
	phone.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, msg, err := phone.ReadMessage(); err != nil || string(msg) != `{"v":2,"n":2}` {
		t.Fatalf("phone got %q, %v", msg, err)
	}

	// The challenge listener answers nothing but challenges.
	resp, err := http.Get("http://" + p.addrs["acme-http"].String() + "/v1/server")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || len(body) != 0 || resp.Header.Get("Location") != "" {
		t.Errorf("challenge listener: %d %q Location %q; want an empty 404", resp.StatusCode, body, resp.Header.Get("Location"))
	}

	metricsText := scrape(t, p)
	for _, want := range []string{"pyrycode_relay_acme_failures_total 0",
		"pyrycode_relay_acme_certificate_not_after_seconds " + formatFloat(leaf.NotAfter.Unix())} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	bin.Close()
	phone.Close()
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	checkLogClean(t, p.log.String())

	// A restarted relay serves the cached certificate and orders nothing.
	p2 := startACMERelay(t, pb, cache, acmeTuning{})
	again, err := leafFrom(t, p2.addrs["https"].String(), pb.Roots)
	if err != nil {
		t.Fatalf("handshake after restart: %v", err)
	}
	if !bytes.Equal(again.Raw, leaf.Raw) {
		t.Error("restarted relay serves a certificate other than the cached one")
	}
	if len(logEvents(t, p2.log.String(), "acme_certificate_loaded")) != 1 {
		t.Errorf("no acme_certificate_loaded event after restart:\n%s", p2.log.String())
	}
	if code := p2.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if n := pb.Orders(); n != 1 {
		t.Errorf("%d orders at the CA after the restart, want still 1", n)
	}
	if ev := logEvents(t, p2.log.String(), "acme_issued"); len(ev) != 0 {
		t.Errorf("restarted relay issued again: %v", ev)
	}
}

// formatFloat prints v as the Prometheus text format does.
func formatFloat(v int64) string { return strconv.FormatFloat(float64(v), 'g', -1, 64) }

// A failing validation is logged and counted once per attempt, retried
// with a doubling backoff however many handshakes come in, and handshakes
// meanwhile fail at once with the remembered error.
func TestACMEFailureBacksOff(t *testing.T) {
	t.Parallel()
	pb := acmetest.Start(t, acmetest.Options{Domain: acmeDomain})
	pb.SetResolving(false) // pebble cannot reach the challenge: every validation fails
	p := startACMERelay(t, pb, filepath.Join(t.TempDir(), "certs"), acmeTuning{retryBase: 2 * time.Second},
		"--log-level", "debug")
	httpsAddr := p.addrs["https"].String()

	first := waitEvents(t, p, "acme_failed", 1)[0]
	for k, want := range map[string]any{"domain": acmeDomain, "acme_error": "connection", "stage": "authorization",
		"failures": float64(1), "retry_in": "2s"} {
		if first[k] != want {
			t.Errorf("acme_failed %s = %v, want %v (event %v)", k, first[k], want, first)
		}
	}

	// 50 handshakes (five clients at a time) during the backoff: each fails,
	// none orders.
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for range 5 {
		wg.Go(func() {
			for range 10 {
				if _, err := leafFrom(t, httpsAddr, pb.Roots); err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if failed != 50 {
		t.Errorf("%d of 50 handshakes failed, want all", failed)
	}
	if n := pb.Orders(); n > 2 {
		t.Fatalf("%d orders at the CA during 50 handshakes, want at most 2", n)
	}

	second := waitEvents(t, p, "acme_failed", 2)[1]
	if second["retry_in"] != "4s" || second["failures"] != float64(2) {
		t.Errorf("second acme_failed: %v; want retry_in 4s after 2 failures", second)
	}
	if n := pb.Orders(); n != 2 {
		t.Errorf("%d orders at the CA after two attempts, want 2", n)
	}
	if !strings.Contains(scrape(t, p), "pyrycode_relay_acme_failures_total 2") {
		t.Error("/metrics does not count the two failures")
	}
	// The handshakes were refused with the remembered failure (logged at
	// debug by the HTTPS server), not by fresh attempts.
	if !strings.Contains(p.log.String(), "authorization failed (connection") {
		t.Errorf("handshake errors do not carry the remembered failure:\n%s", p.log.String())
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if n := len(logEvents(t, p.log.String(), "acme_failed")); n != 2 {
		t.Errorf("%d acme_failed events, want exactly one per attempt (2)", n)
	}
	checkLogClean(t, p.log.String())
}

// A certificate entering its renewal window is renewed while the relay keeps
// serving the old one, also through a failed renewal; a success resets the
// backoff.
func TestACMERenewsWhileServing(t *testing.T) {
	t.Parallel()
	// One-minute certificates renewed 55 s before expiry: due 5 s after issue.
	pb := acmetest.Start(t, acmetest.Options{Domain: acmeDomain, Validity: time.Minute})
	pb.SetResolving(false)
	p := startACMERelay(t, pb, filepath.Join(t.TempDir(), "certs"),
		acmeTuning{retryBase: time.Second, renewBefore: 55 * time.Second})
	httpsAddr := p.addrs["https"].String()

	// A failure, then a success once the challenge is reachable.
	waitEvents(t, p, "acme_failed", 1)
	pb.SetResolving(true)
	waitEvents(t, p, "acme_issued", 1)
	first, err := leafFrom(t, httpsAddr, pb.Roots)
	if err != nil {
		t.Fatalf("handshake after issuance: %v", err)
	}
	if life := first.NotAfter.Sub(first.NotBefore); life > time.Minute {
		t.Fatalf("certificate lives %v, want pebble's short validity", life)
	}

	// The renewal fails: the old certificate stays in service and the
	// backoff starts again from its base.
	pb.SetResolving(false)
	ev := waitEvents(t, p, "acme_failed", 2)[1]
	if ev["retry_in"] != "1s" || ev["failures"] != float64(1) {
		t.Errorf("renewal failure %v; want retry_in 1s after 1 failure (backoff reset by the success)", ev)
	}
	if got, err := leafFrom(t, httpsAddr, pb.Roots); err != nil || !bytes.Equal(got.Raw, first.Raw) {
		t.Fatalf("during the failing renewal: %v; want the first certificate still served", err)
	}

	// The retry succeeds and the new certificate replaces the old one.
	pb.SetResolving(true)
	waitEvents(t, p, "acme_issued", 2)
	second, err := leafFrom(t, httpsAddr, pb.Roots)
	if err != nil {
		t.Fatalf("handshake after renewal: %v", err)
	}
	if bytes.Equal(second.Raw, first.Raw) || second.NotAfter.Before(first.NotAfter) {
		t.Errorf("after renewal: serial %v until %v; before: serial %v until %v", second.SerialNumber,
			second.NotAfter, first.SerialNumber, first.NotAfter)
	}
	if n := pb.Orders(); n != 4 {
		t.Errorf("%d orders at the CA, want 4 (fail, issue, failed renewal, renewal)", n)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	checkLogClean(t, p.log.String())
}

func TestACMECACertErrorsExitTwo(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--insecure-listen", "127.0.0.1:0", "--acme-ca-cert", notPEM}, "--acme-ca-cert needs --domain"},
		{[]string{"--domain", acmeDomain, "--cert-cache", filepath.Join(dir, "certs"), "--acme-ca-cert", notPEM,
			"--https-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, "--acme-ca-cert: tlsconf: cannot load CA certificates"},
		{[]string{"--domain", acmeDomain, "--cert-cache", filepath.Join(dir, "certs"), "--acme-ca-cert", filepath.Join(dir, "missing.pem"),
			"--https-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, "--acme-ca-cert"},
	} {
		var out, errb syncBuf
		if code := run(context.Background(), tc.args, noenv, &out, &errb, nil); code != exitUsage {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if msg := errb.String(); !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") != 1 {
			t.Errorf("%v: stderr %q, want one line with %q", tc.args, msg, tc.want)
		}
	}
}

// seedDomainCache writes a self-signed certificate for acmeDomain into a new
// cache directory, in the manager's (and autocert's) layout, and returns the
// directory and a pool that trusts the certificate.
func seedDomainCache(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	cache := filepath.Join(t.TempDir(), "certs")
	if err := os.MkdirAll(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, _, pool := testCert(t, acmeDomain)
	if err := os.WriteFile(filepath.Join(cache, acmeDomain), append(keyPEM, certPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	return cache, pool
}

// unusedCA is an ACME directory URL on 127.0.0.1 that fails the test if it
// is contacted: a relay with a valid cached certificate needs no CA.
func unusedCA(t *testing.T) string {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("ACME CA contacted: %s %s", r.Method, r.URL)
		w.WriteHeader(http.StatusInternalServerError)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/directory"
}

// Shutting down the certificate manager runs alongside the drain: however
// long it takes (here it is held until the WebSocket has its close frame),
// connected clients get their 1001 at once. The relay used to close the
// manager first, spending the drain budget before any 1001 was sent.
func TestShutdownDoesNotWaitForCertificateManager(t *testing.T) {
	t.Parallel()
	cache, pool := seedDomainCache(t)
	got1001 := make(chan struct{})
	closing := func() {
		select {
		case <-got1001:
		case <-time.After(15 * time.Second):
		}
	}
	ctx := context.WithValue(context.Background(), acmeTuningKey{}, acmeTuning{closing: closing})
	p := startRunWith(t, ctx, nil, "--domain", acmeDomain, "--cert-cache", cache,
		"--https-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--acme-directory", unusedCA(t))

	d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: acmeDomain}}
	h := binHeaders("srv-shutdown")
	h.Set("Host", acmeDomain)
	bin := dialWS(t, d, "wss://"+p.addrs["https"].String()+"/v1/server", h)

	stopped := make(chan int, 1)
	go func() { stopped <- p.stop(t) }()
	bin.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := bin.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Errorf("got %v, want close 1001 while the certificate manager is closing", err)
		}
		break
	}
	close(got1001)
	if code := <-stopped; code != 0 {
		t.Errorf("exit %d", code)
	}
}

// The ACME challenge listener is not behind the relay's connection caps: a
// relay at --max-connections still lets the CA fetch its challenges (a 503
// there used to spend one of Let's Encrypt's 5 failed validations per hour
// on every attempt). It has a small per-IP cap of its own.
func TestACMEChallengeListenerIsOutsideTheRelayCaps(t *testing.T) {
	t.Parallel()
	cache, pool := seedDomainCache(t)
	p := startRun(t, "--domain", acmeDomain, "--cert-cache", cache,
		"--https-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--acme-directory", unusedCA(t),
		"--max-connections", "2")
	httpsAddr, challengeAddr := p.addrs["https"].String(), p.addrs["acme-http"].String()

	// hold opens a TCP connection that stays open (and counted) until the
	// test ends.
	hold := func(addr string) {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	status := func(client *http.Client, url string) int {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	hold(httpsAddr)
	hold(httpsAddr)
	// Once both are accepted, the relay is at its cap: HTTPS requests get 503.
	tlsClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: acmeDomain}, DisableKeepAlives: true}}
	deadline := time.Now().Add(10 * time.Second)
	for status(tlsClient, "https://"+httpsAddr+"/v1/server") != http.StatusServiceUnavailable { // /healthz is never refused
		if time.Now().After(deadline) {
			t.Fatal("the relay never reached --max-connections")
		}
		time.Sleep(10 * time.Millisecond)
	}

	plain := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	challenge := "http://" + challengeAddr + "/.well-known/acme-challenge/unknown-token"
	if code := status(plain, challenge); code != http.StatusNotFound {
		t.Errorf("challenge request at the relay's cap: %d, want the challenge handler's 404", code)
	}

	// Its own per-IP cap: with that many connections held, the next gets 429.
	for range acmeMaxConnsPerIP {
		hold(challengeAddr)
	}
	deadline = time.Now().Add(10 * time.Second)
	for status(plain, challenge) != http.StatusTooManyRequests {
		if time.Now().After(deadline) {
			t.Fatal("the challenge listener's per-IP cap never applied")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
