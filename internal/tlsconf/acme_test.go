package tlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
)

// newFakeDirectory stands in for the ACME CA. Any request to it fails the
// test: with a valid cached certificate the manager must not need a CA, and
// no test may reach a real one.
func newFakeDirectory(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("ACME CA contacted: %s %s", r.Method, r.URL.Path)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/directory"
}

func newCacheDir(t *testing.T) string {
	t.Helper()
	dir, err := PrepareCacheDir(filepath.Join(t.TempDir(), "certs"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// seedCache stores p the way the manager (and autocert before it) does:
// under the bare domain name, the PEM private key followed by the PEM chain.
func seedCache(t *testing.T, cacheDir, domain string, p testPair) {
	t.Helper()
	data := append(slices.Clone(p.keyPEM), p.certPEM...)
	if err := os.WriteFile(filepath.Join(cacheDir, domain), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestACME(t *testing.T, cfg ACMEConfig) *ACME {
	t.Helper()
	if cfg.Domain == "" {
		cfg.Domain = testDomain
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = newCacheDir(t)
	}
	if cfg.DirectoryURL == "" {
		cfg.DirectoryURL = newFakeDirectory(t)
	}
	if cfg.Log == nil {
		cfg.Log = quietLog()
	}
	a, err := NewACME(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func TestNewACME(t *testing.T) {
	a := newTestACME(t, ACMEConfig{Domain: "Relay.Example.Test.", Email: "ops@example.test"})
	if a.domain != testDomain {
		t.Errorf("domain = %q, want %q", a.domain, testDomain)
	}
	if a.retryBase != DefaultRetryBase || a.retryMax != DefaultRetryMax {
		t.Errorf("backoff %v..%v, want %v..%v", a.retryBase, a.retryMax, DefaultRetryBase, DefaultRetryMax)
	}
	if a.cert.Load() != nil {
		t.Error("a certificate without any in the cache")
	}

	for _, cfg := range []ACMEConfig{{CacheDir: "x"}, {Domain: testDomain}} {
		if a, err := NewACME(cfg); err == nil || a != nil {
			t.Errorf("NewACME(%+v) = %v, %v; want an error", cfg, a, err)
		}
	}

	d, err := NewACME(ACMEConfig{Domain: testDomain, CacheDir: newCacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	if d.client.DirectoryURL != "https://acme-v02.api.letsencrypt.org/directory" {
		t.Errorf("default directory %q, want Let's Encrypt production", d.client.DirectoryURL)
	}
	if d.log != slog.Default() {
		t.Error("nil Log is not slog.Default()")
	}
	d.Close() // never started: must not block
}

func TestACMETLSConfig(t *testing.T) {
	cfg := newTestACME(t, ACMEConfig{}).TLSConfig()
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	if want := []string{"http/1.1"}; !slices.Equal(cfg.NextProtos, want) {
		t.Errorf("NextProtos = %q, want %q", cfg.NextProtos, want)
	}
	if cfg.GetCertificate == nil || cfg.Certificates != nil {
		t.Error("config must serve through GetCertificate only")
	}
}

func TestACMEServesCachedCertificate(t *testing.T) {
	ca := newTestCA(t)
	pair := ca.issue(t, testDomain)
	cacheDir := newCacheDir(t)
	seedCache(t, cacheDir, testDomain, pair)

	a := newTestACME(t, ACMEConfig{CacheDir: cacheDir})
	a.Start() // a 90-day certificate is far from renewal: the CA is not contacted
	srv := startTLSServer(t, a.TLSConfig())

	for _, name := range []string{testDomain, "RELAY.Example.Test", testDomain + "."} {
		t.Run("serves the cached certificate to "+name, func(t *testing.T) {
			state, cerr, serr := srv.handshake(t, clientConfig(ca, strings.TrimSuffix(name, ".")))
			if cerr != nil || serr != nil {
				t.Fatalf("handshake failed: client %v, server %v", cerr, serr)
			}
			if !bytes.Equal(state.PeerCertificates[0].Raw, pair.leafDER) {
				t.Error("server presented a certificate other than the cached one")
			}
			if state.Version < tls.VersionTLS12 {
				t.Errorf("negotiated version %x, want >= TLS 1.2", state.Version)
			}
			if state.NegotiatedProtocol != "http/1.1" {
				t.Errorf("ALPN = %q, want http/1.1 even though the client offered h2", state.NegotiatedProtocol)
			}
		})
	}

	t.Run("refuses TLS 1.1", func(t *testing.T) {
		cfg := clientConfig(ca, testDomain)
		cfg.MinVersion = tls.VersionTLS10
		cfg.MaxVersion = tls.VersionTLS11
		_, cerr, serr := srv.handshake(t, cfg)
		if cerr == nil || serr == nil {
			t.Fatalf("TLS 1.1 handshake: client %v, server %v, want both to fail", cerr, serr)
		}
		if !strings.Contains(serr.Error(), "version") {
			t.Errorf("server error %q does not mention the protocol version", serr)
		}
	})

	t.Run("refuses another server name", func(t *testing.T) {
		_, cerr, serr := srv.handshake(t, clientConfig(ca, "other.example.test"))
		if cerr == nil || serr == nil {
			t.Fatalf("handshake for another name: client %v, server %v, want both to fail", cerr, serr)
		}
		if !strings.Contains(serr.Error(), "not the configured domain") {
			t.Errorf("server error %q is not the name check's", serr)
		}
	})

	t.Run("refuses a handshake without server name", func(t *testing.T) {
		cfg := &tls.Config{InsecureSkipVerify: true} // dialing an IP sends no SNI
		_, cerr, serr := srv.handshake(t, cfg)
		if cerr == nil || serr == nil {
			t.Fatalf("handshake without SNI: client %v, server %v, want both to fail", cerr, serr)
		}
	})
}

func TestACMEIgnoresUnusableCache(t *testing.T) {
	ca := newTestCA(t)
	good, other := ca.issue(t, testDomain), ca.issue(t, "other.example.test")
	for name, data := range map[string][]byte{
		"garbage":        []byte("not PEM"),
		"key only":       good.keyPEM,
		"chain only":     good.certPEM,
		"mismatched key": append(slices.Clone(other.keyPEM), good.certPEM...),
		"another domain": append(slices.Clone(other.keyPEM), other.certPEM...),
		"truncated leaf": append(slices.Clone(good.keyPEM), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")...),
	} {
		t.Run(name, func(t *testing.T) {
			dir := newCacheDir(t)
			if err := os.WriteFile(filepath.Join(dir, testDomain), data, 0o600); err != nil {
				t.Fatal(err)
			}
			logs := new(lockedBuffer)
			if a := newTestACME(t, ACMEConfig{CacheDir: dir, Log: slog.New(slog.NewJSONHandler(logs, nil))}); a.cert.Load() != nil {
				t.Error("an unusable cache entry was put in service")
			}
			if !strings.Contains(logs.String(), `"msg":"acme_cache_ignored"`) || !strings.Contains(logs.String(), `"reason":`) {
				t.Errorf("the ignored entry is not logged with a reason:\n%s", logs)
			}
			if strings.Contains(logs.String(), "PRIVATE KEY") {
				t.Error("key material in the log")
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		dir := newCacheDir(t)
		seedCache(t, dir, testDomain, ca.issueValid(t, testDomain, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)))
		logs := new(lockedBuffer)
		if a := newTestACME(t, ACMEConfig{CacheDir: dir, Log: slog.New(slog.NewJSONHandler(logs, nil))}); a.cert.Load() != nil {
			t.Error("an expired cache entry was put in service")
		}
		if !strings.Contains(logs.String(), `"reason":"expired"`) {
			t.Errorf("the expired entry is not logged as such:\n%s", logs)
		}
	})
}

func TestACMEChallengeHandler(t *testing.T) {
	a := newTestACME(t, ACMEConfig{})
	const token, keyAuth = "tok-123_abc", "tok-123_abc.thumbprint"
	a.tokens[token] = keyAuth
	srv := httptest.NewServer(a.ChallengeHandler())
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	do := func(t *testing.T, method, path, host string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}

	for _, tc := range []struct{ method, path, host string }{
		{http.MethodGet, "/", testDomain},
		{http.MethodGet, "/v1/client", testDomain},
		{http.MethodGet, "/.well-known/acme-challenge/unknown", testDomain},
		{http.MethodGet, "/.well-known/acme-challenge/", testDomain},
		{http.MethodGet, "/.well-known/acme-challenge/" + token + "/x", testDomain},
		{http.MethodGet, "/.well-known/acme-challenge/" + token, "other.example.test"},
		{http.MethodPost, "/.well-known/acme-challenge/" + token, testDomain},
		{http.MethodHead, "/", testDomain},
	} {
		t.Run(tc.method+" "+tc.path+" for "+tc.host+" is 404", func(t *testing.T) {
			resp, body := do(t, tc.method, tc.path, tc.host)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("status %d, want 404", resp.StatusCode)
			}
			if body != "" {
				t.Errorf("body %q, want empty", body)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("Location %q, want none", loc)
			}
		})
	}

	for _, host := range []string{testDomain, testDomain + ":80", "RELAY.example.test."} {
		t.Run("answers a known token for "+host, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, "/.well-known/acme-challenge/"+token, host)
			if resp.StatusCode != http.StatusOK || body != keyAuth {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, keyAuth)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	var got []time.Duration
	for n := 1; n <= 9; n++ {
		got = append(got, retryDelay(time.Minute, time.Hour, n))
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute,
		16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour, time.Hour}
	if !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
	if d := retryDelay(time.Minute, time.Hour, 1000); d != time.Hour {
		t.Errorf("after 1000 failures %v, want the cap", d)
	}
}

func TestRenewAt(t *testing.T) {
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	leaf := func(life time.Duration) *x509.Certificate {
		return &x509.Certificate{NotBefore: at, NotAfter: at.Add(life)}
	}
	a := &ACME{}
	for _, tc := range []struct {
		life, before time.Duration
	}{
		{90 * day, 30 * day}, // Let's Encrypt today: 30 days ahead
		{6 * day, 2 * day},   // short-lived certificates: a third
		{365 * day, 30 * day},
	} {
		if got := a.renewAt(leaf(tc.life)); !got.Equal(at.Add(tc.life - tc.before)) {
			t.Errorf("%v certificate renewed at %v, want %v before expiry", tc.life, got, tc.before)
		}
	}
	a.renewBefore = time.Hour
	if got := a.renewAt(leaf(90 * day)); !got.Equal(at.Add(90*day - time.Hour)) {
		t.Errorf("with RenewBefore 1h: %v", got)
	}
}

func TestIssueErrorClassification(t *testing.T) {
	const token = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq" // 43 base64url characters
	retry := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	problem := func(typ string, status int, detail string) *acme.Error {
		return &acme.Error{ProblemType: typ, StatusCode: status, Detail: detail}
	}
	for _, tc := range []struct {
		name, typ string
		status    int
		err       error
	}{
		{"rate limit", "rateLimited", 429, problem("urn:ietf:params:acme:error:rateLimited", 429, "too many")},
		{"failed validation", "connection", 400, &acme.AuthorizationError{Errors: []error{
			problem("urn:ietf:params:acme:error:connection", 400, "Fetching http://relay.example.test/.well-known/acme-challenge/"+token+": refused")}}},
		{"authorization without problem", "invalid", 0, &acme.AuthorizationError{}},
		{"invalid order", "dns", 400, &acme.OrderError{Problem: problem("urn:ietf:params:acme:error:dns", 400, "NXDOMAIN")}},
		{"odd problem type", "other", 500, problem("about:blank", 500, "")},
		{"timeout", "timeout", 0, context.DeadlineExceeded},
		{"network", "network", 0, &net.OpError{Op: "dial", Err: errors.New("refused")}},
		{"untrusted CA", "tls", 0, x509.UnknownAuthorityError{}},
		{"cache", "cache", 0, errCache},
		{"bad certificate", "bad_certificate", 0, errBadCertificate},
		{"no http-01", "no_http01", 0, errNoHTTP01},
		{"something else", "other", 0, errors.New("boom")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newIssueError(testDomain, "authorization", tc.err, retry)
			if e.Type != tc.typ || e.Status != tc.status {
				t.Errorf("type %q status %d, want %q %d", e.Type, e.Status, tc.typ, tc.status)
			}
			msg := e.Error()
			for _, want := range []string{testDomain, "authorization failed (" + tc.typ, "2030-01-01T00:00:00Z"} {
				if !strings.Contains(msg, want) {
					t.Errorf("Error() %q lacks %q", msg, want)
				}
			}
			if strings.Contains(msg, token) || strings.Contains(e.Detail, token) {
				t.Errorf("token leaked: %q", msg)
			}
		})
	}
}

// Details as Let's Encrypt (Boulder) and pebble word them. Tokens, key
// authorizations and JWS fragments are removed; URLs, including the
// documentation and unpause links an operator needs, stay readable.
func TestRedact(t *testing.T) {
	const (
		token      = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0" // 43 base64url characters, as Let's Encrypt makes them
		thumbprint = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
		shortToken = "aB3dE5gH7jK9mN1pQ3sT5v" // 22 characters: the 128 bits RFC 8555 asks for at least
		jwt        = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhcGkiOiJ2MSIsImlkZW50cyI6InJlbGF5LmV4YW1wbGUuY29tIn0.Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5"
		protected  = "eyJhbGciOiJFUzI1NiIsIm5vbmNlIjoiYWJjIn0"
	)
	for _, tc := range []struct{ name, in, want string }{
		{"unpause link",
			"Your account is temporarily prevented from requesting certificates for relay.example.com and possibly others. Please visit: https://portal.letsencrypt.org/sfe/v1/unpause?jwt=" + jwt,
			"Your account is temporarily prevented from requesting certificates for relay.example.com and possibly others. Please visit: https://portal.letsencrypt.org/sfe/v1/unpause?jwt=[redacted]"},
		{"rate limit with documentation link",
			"too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-12-03 10:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-identifiers",
			"too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-12-03 10:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-identifiers"},
		{"failed validation",
			"203.0.113.7: Invalid response from http://relay.example.com/.well-known/acme-challenge/" + token + ": 404",
			"203.0.113.7: Invalid response from http://relay.example.com/.well-known/acme-challenge/[redacted]: 404"},
		{"short token in the challenge path",
			"127.0.0.1: Fetching http://relay.example.com/.well-known/acme-challenge/" + shortToken + ": Connection refused",
			"127.0.0.1: Fetching http://relay.example.com/.well-known/acme-challenge/[redacted]: Connection refused"},
		{"key authorization",
			`The key authorization file from the server did not match this challenge. Expected "` + token + "." + thumbprint + `" (got "hello world")`,
			`The key authorization file from the server did not match this challenge. Expected "[redacted]" (got "hello world")`},
		{"token in a query value",
			"see https://ca.example.test/acme/chall/123?token=" + token + "&lang=en",
			"see https://ca.example.test/acme/chall/123?token=[redacted]&lang=en"},
		{"JWS fragment",
			`Unable to validate JWS :: JWS verification error: protected "` + protected + `" is not valid`,
			`Unable to validate JWS :: JWS verification error: protected "[redacted]" is not valid`},
		{"user information in a URL",
			"Fetching https://user:hunter2@relay.example.com/x failed",
			"Fetching https://[redacted]@relay.example.com/x failed"},
		{"account URL",
			"Account https://acme-v02.api.letsencrypt.org/acme/acct/1234567890 is not valid, has status \"deactivated\"",
			"Account https://acme-v02.api.letsencrypt.org/acme/acct/1234567890 is not valid, has status \"deactivated\""},
		{"CAA", "CAA record for relay.example.com prevents issuance", "CAA record for relay.example.com prevents issuance"},
		{"DNS", "DNS problem: NXDOMAIN looking up A for relay.example.com - check that a DNS record exists for this domain",
			"DNS problem: NXDOMAIN looking up A for relay.example.com - check that a DNS record exists for this domain"},
		{"control characters", "line\nbreak\x1b[31m", "line break [31m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := redact(tc.in); got != tc.want {
				t.Errorf("redact(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
	long := strings.Repeat("é", 400)
	if got := redact(long); len(got) > maxDetail+len("…") || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "é") {
		t.Errorf("long detail cut to %d bytes: %q", len(got), got)
	}
}

func TestACMERetryBackoff(t *testing.T) {
	res := func(retryAfter string) *http.Response {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{Header: h}
	}
	for _, tc := range []struct {
		n          int
		retryAfter string
		want       time.Duration
	}{
		{1, "", 250 * time.Millisecond},
		{3, "", 750 * time.Millisecond},
		{4, "", 0}, // three retries at most
		{1, "2", 2 * time.Second},
		{1, "3600", 0},     // a long pause is the manager's backoff, not a sleep
		{1, "tomorrow", 0}, // dates are not waited for either
	} {
		if got := acmeRetryBackoff(tc.n, nil, res(tc.retryAfter)); got != tc.want {
			t.Errorf("retry %d with Retry-After %q: %v, want %v", tc.n, tc.retryAfter, got, tc.want)
		}
	}
}

func TestLoadCertPool(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(good, ca.issue(t, testDomain).certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if pool, err := LoadCertPool(good); err != nil || pool == nil {
		t.Fatalf("LoadCertPool = %v, %v", pool, err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("nothing"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{empty, filepath.Join(dir, "missing.pem")} {
		if _, err := LoadCertPool(f); !errors.Is(err, ErrCACert) {
			t.Errorf("LoadCertPool(%s) = %v, want ErrCACert", f, err)
		}
	}
}
