package tlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/acme/autocert"
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

// seedAutocertCache stores p the way autocert.Manager does after issuance:
// under the bare domain name (the key of an ECDSA certificate; RSA ones get
// a "+rsa" suffix), as the PEM private key followed by the PEM chain.
func seedAutocertCache(t *testing.T, cacheDir, domain string, p testPair) {
	t.Helper()
	data := append(slices.Clone(p.keyPEM), p.certPEM...)
	if err := os.WriteFile(filepath.Join(cacheDir, domain), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestNewAutocert(t *testing.T) {
	ctx := context.Background()
	cacheDir := newCacheDir(t)

	m := NewAutocert(testDomain+".", cacheDir, "ops@example.test", "http://127.0.0.1:1/directory")
	if m.Prompt == nil || !m.Prompt("https://ca.example.test/tos") {
		t.Error("Prompt does not accept the terms of service")
	}
	if got, ok := m.Cache.(autocert.DirCache); !ok || string(got) != cacheDir {
		t.Errorf("Cache = %#v, want DirCache(%q)", m.Cache, cacheDir)
	}
	if m.Email != "ops@example.test" {
		t.Errorf("Email = %q", m.Email)
	}
	if m.Client == nil || m.Client.DirectoryURL != "http://127.0.0.1:1/directory" {
		t.Errorf("Client = %#v, want the given directory URL", m.Client)
	}
	if err := m.HostPolicy(ctx, testDomain); err != nil {
		t.Errorf("HostPolicy(%q) = %v, want nil", testDomain, err)
	}
	for _, host := range []string{"other.example.test", "sub.relay.example.test", "example.test"} {
		if err := m.HostPolicy(ctx, host); err == nil {
			t.Errorf("HostPolicy(%q) = nil, want refusal", host)
		}
	}

	if m := NewAutocert(testDomain, cacheDir, "", ""); m.Client != nil {
		t.Errorf("Client = %#v without a directory URL, want nil (autocert's default CA)", m.Client)
	}
}

func TestAutocertTLSConfig(t *testing.T) {
	m := NewAutocert(testDomain, newCacheDir(t), "", newFakeDirectory(t))
	cfg := AutocertTLSConfig(m)
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	if want := []string{"http/1.1", "acme-tls/1"}; !slices.Equal(cfg.NextProtos, want) {
		t.Errorf("NextProtos = %q, want %q", cfg.NextProtos, want)
	}
	if cfg.GetCertificate == nil {
		t.Error("GetCertificate not set")
	}
}

func TestAutocertServesCachedCertificate(t *testing.T) {
	ca := newTestCA(t)
	pair := ca.issue(t, testDomain)
	cacheDir := newCacheDir(t)
	seedAutocertCache(t, cacheDir, testDomain, pair)

	m := NewAutocert(testDomain, cacheDir, "", newFakeDirectory(t))
	srv := startTLSServer(t, AutocertTLSConfig(m))

	for _, name := range []string{testDomain, "RELAY.Example.Test"} {
		t.Run("serves the cached certificate to "+name, func(t *testing.T) {
			state, cerr, serr := srv.handshake(t, clientConfig(ca, name))
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
		if !strings.Contains(serr.Error(), "HostWhitelist") {
			t.Errorf("server error %q is not the host policy's", serr)
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

func TestChallengeHandler(t *testing.T) {
	cacheDir := newCacheDir(t)
	// autocert keeps pending http-01 answers in its cache under
	// "<token>+http-01"; seeding one lets the handler answer without a CA.
	const token, keyAuth = "tok-123_abc", "tok-123_abc.thumbprint"
	if err := os.WriteFile(filepath.Join(cacheDir, token+"+http-01"), []byte(keyAuth), 0o600); err != nil {
		t.Fatal(err)
	}
	m := NewAutocert(testDomain, cacheDir, "", newFakeDirectory(t))
	srv := httptest.NewServer(ChallengeHandler(m))
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

	for _, host := range []string{testDomain, testDomain + ":80"} {
		t.Run("answers a known token for "+host, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, "/.well-known/acme-challenge/"+token, host)
			if resp.StatusCode != http.StatusOK || body != keyAuth {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, keyAuth)
			}
		})
	}
}
