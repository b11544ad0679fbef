package tlsconf

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// challengePathPrefix is where ACME CAs fetch http-01 key authorizations.
const challengePathPrefix = "/.well-known/acme-challenge/"

// maxChallengeBody bounds what ChallengeHandler buffers from the autocert
// handler. A key authorization is a token, a dot and a key thumbprint, well
// under a hundred bytes; anything larger is not a challenge answer.
const maxChallengeBody = 4 << 10

// NewAutocert returns a certificate manager that obtains and renews
// certificates from an ACME CA for domain and for nothing else.
//
// The manager accepts the CA's terms of service, refuses every other server
// name through autocert.HostWhitelist, and keeps keys and certificates in
// cacheDir (which should come from PrepareCacheDir). A single trailing dot on
// domain is ignored. email, when non-empty, is given to the CA as the account
// contact. directoryURL, when non-empty, replaces the default Let's Encrypt
// production directory, for a staging CA or a test server.
//
// The returned manager is safe for concurrent use. It only talks to the CA
// when asked for a certificate it does not hold in memory or in cacheDir.
func NewAutocert(domain, cacheDir, email, directoryURL string) *autocert.Manager {
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(strings.TrimSuffix(domain, ".")),
		Cache:      autocert.DirCache(cacheDir),
		Email:      email,
	}
	if directoryURL != "" {
		m.Client = &acme.Client{DirectoryURL: directoryURL}
	}
	return m
}

// AutocertTLSConfig returns the TLS configuration for the HTTPS listener of a
// relay that uses m. It is m.TLSConfig with TLS 1.2 as the minimum version and
// without "h2" among the ALPN protocols: the relay speaks WebSocket over
// HTTP/1.1 only, while "acme-tls/1" stays so the CA can use tls-alpn-01.
//
// Each call returns a new *tls.Config that the caller may adjust.
func AutocertTLSConfig(m *autocert.Manager) *tls.Config {
	cfg := m.TLSConfig()
	cfg.MinVersion = tls.VersionTLS12
	cfg.NextProtos = slices.DeleteFunc(slices.Clone(cfg.NextProtos), func(p string) bool {
		return p == "h2"
	})
	return cfg
}

// ChallengeHandler returns the handler for the relay's plain-HTTP listener
// (port 80). It answers ACME http-01 challenges for m and gives every other
// request, including a challenge request autocert cannot answer, a 404 with
// an empty body. It never redirects to HTTPS and never reveals autocert's
// error text.
//
// Calling ChallengeHandler also enables the http-01 challenge type in m, so it
// should be called before m first obtains a certificate. The handler is safe
// for concurrent use.
func ChallengeHandler(m *autocert.Manager) http.Handler {
	acmeHandler := m.HTTPHandler(http.HandlerFunc(notFound))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method != http.MethodGet && r.Method != http.MethodHead) ||
			!strings.HasPrefix(r.URL.Path, challengePathPrefix) {
			notFound(w, r)
			return
		}
		// autocert applies the host policy to r.Host as it is, so a port
		// in the Host header would make a legitimate challenge fail.
		if host := hostWithoutPort(r.Host); host != r.Host {
			r2 := new(http.Request)
			*r2 = *r
			r2.Host = host
			r = r2
		}
		rec := &challengeRecorder{header: make(http.Header)}
		acmeHandler.ServeHTTP(rec, r)
		if rec.status != http.StatusOK || rec.tooLong {
			notFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Content-Length", strconv.Itoa(rec.body.Len()))
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(rec.body.Bytes())
	})
}

// notFound answers 404 with no body at all.
func notFound(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNotFound)
}

// challengeRecorder captures the autocert handler's answer so that only a
// successful one reaches the client; error answers carry messages that the
// relay does not want to expose.
type challengeRecorder struct {
	header  http.Header
	status  int
	body    bytes.Buffer
	tooLong bool
}

func (r *challengeRecorder) Header() http.Header { return r.header }

func (r *challengeRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *challengeRecorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	if r.body.Len()+len(p) > maxChallengeBody {
		r.tooLong = true
		return len(p), nil
	}
	return r.body.Write(p)
}
