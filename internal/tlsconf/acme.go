package tlsconf

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// Defaults for ACMEConfig.
const (
	// DefaultRetryBase is the wait after the first failed attempt to get a
	// certificate; each further failure doubles it.
	DefaultRetryBase = time.Minute
	// DefaultRetryMax caps the wait between two attempts.
	DefaultRetryMax = time.Hour
)

const (
	// attemptTimeout bounds one whole attempt: account, order, validation,
	// finalization. Let's Encrypt normally needs a few seconds.
	attemptTimeout = 3 * time.Minute
	// releaseTimeout bounds the release of a failed attempt's pending
	// authorizations.
	releaseTimeout = 10 * time.Second
	// handshakeWait bounds how long a handshake waits for the first
	// certificate while an attempt is under way.
	handshakeWait = 90 * time.Second
	// maxRenewBefore caps the default renewal window (a third of the
	// certificate's lifetime): 30 days, as for Let's Encrypt's 90-day ones.
	maxRenewBefore = 30 * 24 * time.Hour
	// expiringWithin is when acme_certificate_expiring starts, and
	// expiryLogEvery how often it and acme_certificate_expired repeat.
	expiringWithin = 7 * 24 * time.Hour
	expiryLogEvery = time.Hour
	// maxIdleWait makes the scheduler look at the clock at least hourly,
	// so a long sleep never outlives a jump of the wall clock by much.
	maxIdleWait = time.Hour
	// accountKeyName is where the account key lives in the cache; the
	// name is autocert's, so caches written by earlier versions keep their
	// account.
	accountKeyName = "acme_account+key"
	// legacyAccountKeyName is where older autocert versions kept it; it is
	// read when accountKeyName is missing.
	legacyAccountKeyName = "acme_account.key"
	// userAgent identifies the relay to the CA.
	acmeUserAgent = "pyrycode-relay"
)

// Metric names.
const (
	metricACMEFailures = "pyrycode_relay_acme_failures_total"
	metricCertNotAfter = "pyrycode_relay_acme_certificate_not_after_seconds"
)

// ACMEConfig configures NewACME. Domain and CacheDir are required.
type ACMEConfig struct {
	// Domain is the one name certificates are obtained and served for. A
	// single trailing dot is ignored.
	Domain string
	// CacheDir holds the account key and the certificate; it should come
	// from PrepareCacheDir. Its layout is autocert's (the certificate
	// under the bare domain name, the account key under
	// "acme_account+key"), so existing caches keep working.
	CacheDir string
	// Email, when set, is given to the CA as the account contact.
	Email string
	// DirectoryURL is the CA's ACME directory; empty means Let's Encrypt
	// production.
	DirectoryURL string
	// RootCAs, when set, are the roots trusted for the CA's HTTPS API
	// instead of the system's (for a private or test CA).
	RootCAs *x509.CertPool
	// Log receives the certificate events; nil means slog.Default().
	Log *slog.Logger
	// RetryBase is the wait after the first failed attempt (one minute);
	// it doubles with each further failure up to RetryMax (one hour).
	RetryBase, RetryMax time.Duration
	// RenewBefore is how long before expiry a certificate is renewed;
	// zero means a third of its lifetime, at most 30 days.
	RenewBefore time.Duration
}

// ACME obtains, caches, renews and serves the certificate for one domain
// from an ACME CA (Let's Encrypt by default), proving control of the domain
// with the http-01 challenge that ChallengeHandler answers.
//
// Attempts to get a certificate are made by one scheduler goroutine (see
// Start), never by a TLS handshake: at start when the cache holds no valid
// certificate, when the certificate enters its renewal window, and after a
// failure with a growing backoff (RetryBase doubling up to RetryMax). An
// attempt places exactly one order and uses only http-01, so a failure
// costs the CA's rate limits one failed validation. Each failure is logged
// once (event acme_failed, with the ACME error type and the domain) and
// counted; a success resets the backoff.
//
// A handshake is served the current certificate without waiting, also while
// a renewal is failing. With no certificate yet, a handshake waits for the
// attempt under way; once an attempt has failed, handshakes fail at once
// with that failure (an *IssueError) until an attempt succeeds.
//
// All methods are safe for concurrent use.
type ACME struct {
	domain      string
	cache       *fileCache
	directory   string       // the ACME directory URL
	httpClient  *http.Client // for the CA's API; shared by every client
	client      *acme.Client // replaced by resetAccount; scheduler goroutine only, once started
	email       string
	log         *slog.Logger
	retryBase   time.Duration
	retryMax    time.Duration
	renewBefore time.Duration

	cert atomic.Pointer[tls.Certificate] // nil until there is one

	mu       sync.Mutex
	lastErr  *IssueError   // the latest attempt's failure; nil once one succeeds
	failures int           // consecutive failed attempts
	retryAt  time.Time     // earliest next attempt after a failure
	recent   []time.Time   // failed attempts within rateWindow; scheduler goroutine only
	settled  chan struct{} // closed when the attempt under way (or the next) ends

	tokensMu sync.RWMutex
	tokens   map[string]string // http-01 token → key authorization

	registered bool   // the account is registered; scheduler goroutine only
	keyEntry   string // the cache entry client.Key was read from; scheduler goroutine only

	now func() time.Time // the clock; time.Now but in tests

	expiringLogged, expiredLogged time.Time // last such events; scheduler goroutine only

	failuresTotal prometheus.Counter
	notAfter      prometheus.Gauge

	startOnce sync.Once
	closeOnce sync.Once
	stop      context.CancelFunc
	stopCtx   context.Context
	done      chan struct{} // closed when the scheduler has returned
	started   atomic.Bool
}

// ErrACMEClosed is returned by GetCertificate, when there is no certificate
// yet, after Close.
var ErrACMEClosed = errors.New("tlsconf: certificate manager closed")

// errNoCertificate is returned to a handshake that waited for an attempt
// which ended without a certificate and without a recorded failure.
var errNoCertificate = errors.New("tlsconf: no certificate yet")

// NewACME returns a manager for cfg. It reads the cache (a valid cached
// certificate is served at once) but contacts no CA until Start.
func NewACME(cfg ACMEConfig) (*ACME, error) {
	domain := strings.ToLower(strings.TrimSuffix(cfg.Domain, "."))
	if domain == "" {
		return nil, errors.New("tlsconf: ACME needs a domain")
	}
	if cfg.CacheDir == "" {
		return nil, ErrCacheDirEmpty
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	cfg.RetryMax = max(cfg.RetryMax, cfg.RetryBase)
	dir := cfg.DirectoryURL
	if dir == "" {
		dir = autocert.DefaultACMEDirectory
	}
	ctx, stop := context.WithCancel(context.Background())
	a := &ACME{
		domain:      domain,
		cache:       newFileCache(cfg.CacheDir),
		email:       cfg.Email,
		log:         cfg.Log,
		retryBase:   cfg.RetryBase,
		retryMax:    cfg.RetryMax,
		renewBefore: cfg.RenewBefore,
		directory:   dir,
		httpClient:  newACMEHTTPClient(cfg.RootCAs),
		settled:     make(chan struct{}),
		tokens:      make(map[string]string),
		failuresTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricACMEFailures,
			Help: "Failed attempts to obtain or renew the Let's Encrypt (ACME) certificate.",
		}),
		notAfter: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricCertNotAfter,
			Help: "Expiry (Unix time, seconds) of the ACME certificate being served; 0 while there is none.",
		}),
		now:     time.Now,
		stop:    stop,
		stopCtx: ctx,
		done:    make(chan struct{}),
	}
	a.client = a.newClient()
	if c := a.loadCached(); c != nil {
		a.install(c)
		a.log.Info("acme_certificate_loaded", "domain", a.domain, "not_after", c.Leaf.NotAfter)
	}
	a.loadFailures()
	return a, nil
}

// newACMEHTTPClient is the client for the CA's API: bounded dials,
// handshakes and waits for headers, TLS 1.2 or newer, proxies from the
// environment as for any outgoing HTTPS.
func newACMEHTTPClient(roots *x509.CertPool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           d.DialContext,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		},
	}
}

// acmeRetryBackoff bounds the ACME client's own retries of one request
// (bad nonces, 5xx, 429) to three quick ones. A CA asking for a longer
// pause gets none: the request fails with the CA's error and the
// manager's backoff takes over, instead of the attempt sleeping until its
// deadline.
func acmeRetryBackoff(n int, _ *http.Request, res *http.Response) time.Duration {
	if n > 3 {
		return 0
	}
	if res != nil {
		if v := res.Header.Get("Retry-After"); v != "" {
			secs, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || secs > 10 {
				return 0
			}
			if secs > 0 {
				return time.Duration(secs) * time.Second
			}
		}
	}
	return time.Duration(n) * 250 * time.Millisecond
}

// Start launches the scheduler goroutine; later calls do nothing. Close
// stops it.
func (a *ACME) Start() {
	a.startOnce.Do(func() {
		a.started.Store(true)
		go a.schedule(a.stopCtx)
	})
}

// Close stops the scheduler, abandoning an attempt under way, waits for it
// to return and releases idle connections to the CA. The current
// certificate stays in service. Close is idempotent.
func (a *ACME) Close() {
	a.closeOnce.Do(func() {
		a.stop()
		if a.started.Load() {
			<-a.done
		}
		a.httpClient.CloseIdleConnections()
	})
}

// Collectors returns the manager's metrics, for metrics.Metrics.Register.
func (a *ACME) Collectors() []prometheus.Collector {
	return []prometheus.Collector{a.failuresTotal, a.notAfter}
}

// TLSConfig returns the TLS configuration for the relay's HTTPS listener:
// certificates from a, TLS 1.2 or newer, HTTP/1.1 only through ALPN. Each
// call returns a new *tls.Config.
func (a *ACME) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: a.GetCertificate,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
	}
}

// GetCertificate serves the certificate for the manager's domain and
// refuses every other server name (and a handshake without one). It never
// starts an attempt to get a certificate; see ACME for when it waits.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name == "" {
		return nil, errors.New("tlsconf: missing server name")
	}
	if name != a.domain {
		return nil, fmt.Errorf("tlsconf: server name %q is not the configured domain", hello.ServerName)
	}
	if c := a.cert.Load(); c != nil {
		return c, nil
	}
	a.mu.Lock()
	failed, settled := a.lastErr, a.settled
	a.mu.Unlock()
	if failed != nil {
		return nil, failed
	}
	ctx := hello.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	t := time.NewTimer(handshakeWait)
	defer t.Stop()
	select {
	case <-settled:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-a.stopCtx.Done():
		return nil, ErrACMEClosed
	case <-t.C:
		return nil, errNoCertificate
	}
	if c := a.cert.Load(); c != nil {
		return c, nil
	}
	a.mu.Lock()
	failed = a.lastErr
	a.mu.Unlock()
	if failed != nil {
		return nil, failed
	}
	return nil, errNoCertificate
}

// ChallengeHandler returns the handler for the relay's plain-HTTP listener
// (port 80). It answers the http-01 challenges of a's attempts, for a's
// domain only, and gives every other request a 404 with an empty body. It
// never redirects to HTTPS.
func (a *ACME) ChallengeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, challengePathPrefix)
		host := strings.TrimSuffix(hostWithoutPort(r.Host), ".")
		if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) ||
			!strings.EqualFold(host, a.domain) || token == "" || strings.Contains(token, "/") {
			notFound(w, r)
			return
		}
		a.tokensMu.RLock()
		keyAuth, ok := a.tokens[token]
		a.tokensMu.RUnlock()
		if !ok {
			notFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Content-Length", strconv.Itoa(len(keyAuth)))
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(keyAuth))
	})
}

// challengePathPrefix is where ACME CAs fetch http-01 key authorizations.
const challengePathPrefix = "/.well-known/acme-challenge/"

// notFound answers 404 with no body at all.
func notFound(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNotFound)
}

// schedule is the scheduler goroutine: it sleeps until the next attempt is
// due and makes it, until ctx ends.
func (a *ACME) schedule(ctx context.Context) {
	defer close(a.done)
	for {
		a.checkExpiry(a.now())
		if wait := a.untilDue(a.now()); wait > 0 {
			t := time.NewTimer(min(wait, maxIdleWait))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		a.attempt(ctx)
		if ctx.Err() != nil {
			return
		}
	}
}

// checkExpiry logs, at error and at most once an hour each, that the
// certificate in service expires within expiringWithin
// (acme_certificate_expiring) or has expired (acme_certificate_expired):
// renewals have been failing for weeks. The scheduler calls it at least
// hourly.
func (a *ACME) checkExpiry(now time.Time) {
	c := a.cert.Load()
	if c == nil {
		return
	}
	left := c.Leaf.NotAfter.Sub(now)
	switch {
	case left <= 0:
		if a.expiredLogged.IsZero() || now.Sub(a.expiredLogged) >= expiryLogEvery {
			a.expiredLogged = now
			a.log.Error("acme_certificate_expired", "domain", a.domain, "not_after", c.Leaf.NotAfter)
		}
	case left < expiringWithin:
		if a.expiringLogged.IsZero() || now.Sub(a.expiringLogged) >= expiryLogEvery {
			a.expiringLogged = now
			a.log.Error("acme_certificate_expiring", "domain", a.domain, "not_after", c.Leaf.NotAfter,
				"expires_in", left.Round(time.Minute).String())
		}
	}
}

// untilDue is how long until the next attempt: none is due while a
// certificate is outside its renewal window, and none before the backoff
// after a failure has passed.
func (a *ACME) untilDue(now time.Time) time.Duration {
	due := now
	if c := a.cert.Load(); c != nil {
		due = a.renewAt(c.Leaf)
	}
	a.mu.Lock()
	if a.lastErr != nil && a.retryAt.After(due) {
		due = a.retryAt
	}
	a.mu.Unlock()
	return due.Sub(now)
}

// renewAt is when leaf enters its renewal window.
func (a *ACME) renewAt(leaf *x509.Certificate) time.Time {
	before := a.renewBefore
	if before <= 0 {
		before = min(leaf.NotAfter.Sub(leaf.NotBefore)/3, maxRenewBefore)
	}
	return leaf.NotAfter.Add(-before)
}

// retryDelay is the wait after the given number of consecutive failures:
// base, doubling with each further failure, at most max.
func retryDelay(base, max time.Duration, failures int) time.Duration {
	d := base
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// attempt makes one attempt and records its outcome. An attempt cut short
// by Close is neither logged nor counted.
func (a *ACME) attempt(ctx context.Context) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	cert, stage, err := a.obtainRecovered(actx)
	cancel()
	if err != nil && ctx.Err() != nil {
		return
	}
	now := a.now()
	if err == nil && !a.renewAt(cert.Leaf).After(now) {
		// Served, but already due for renewal by the local clock (skewed,
		// or a renewal window longer than the lifetime): another order at
		// once would issue a duplicate, so this counts as a failure and the
		// next order waits for the backoff.
		a.install(cert)
		a.log.Info("acme_issued", "domain", a.domain, "not_after", cert.Leaf.NotAfter,
			"renew_at", a.renewAt(cert.Leaf).UTC().Format(time.RFC3339))
		cert, stage, err = nil, "certificate", errAlreadyDue
	}
	if err == nil {
		a.recent = nil
	} else {
		a.recent = append(recentWithin(a.recent, now), now)
	}
	a.mu.Lock()
	if err == nil {
		a.lastErr, a.failures, a.retryAt = nil, 0, time.Time{}
		a.install(cert)
	} else {
		a.failures++
		a.retryAt = nextAttemptAt(now, retryDelay(a.retryBase, a.retryMax, a.failures), retryAfterOf(err), a.recent)
		a.lastErr = newIssueError(a.domain, stage, err, a.retryAt)
	}
	failed, failures := a.lastErr, a.failures
	settled := a.settled
	a.settled = make(chan struct{})
	a.mu.Unlock()
	// Handshakes waiting for this attempt are released only once it is
	// logged and counted.
	defer close(settled)

	if err == nil {
		a.clearFailures()
		a.log.Info("acme_issued", "domain", a.domain, "not_after", cert.Leaf.NotAfter,
			"renew_at", a.renewAt(cert.Leaf).UTC().Format(time.RFC3339))
		return
	}
	a.saveFailures(failureRecord{Directory: a.directory, Recent: a.recent, Consecutive: failures,
		RetryAt: failed.RetryAt, Stage: failed.Stage, Type: failed.Type, Status: failed.Status, Detail: failed.Detail})
	a.failuresTotal.Inc()
	retryIn := failed.RetryAt.Sub(now).Round(time.Millisecond).String()
	if c := a.cert.Load(); c != nil { // a renewal: the current certificate stays in service
		a.log.Warn("acme_failed", "domain", a.domain, "stage", failed.Stage, "acme_error", failed.Type,
			"status", failed.Status, "detail", failed.Detail, "failures", failures, "retry_in", retryIn,
			"not_after", c.Leaf.NotAfter)
		return
	}
	a.log.Warn("acme_failed", "domain", a.domain, "stage", failed.Stage, "acme_error", failed.Type,
		"status", failed.Status, "detail", failed.Detail, "failures", failures, "retry_in", retryIn)
}

// obtainRecovered is obtain with a panic turned into a failed attempt
// (stage "internal"), logged at error with its stack. A bug in the
// certificate code must never take the relay down: the attempt is counted
// and retried after the usual backoff, with a fresh account state.
func (a *ACME) obtainRecovered(ctx context.Context) (cert *tls.Certificate, stage string, err error) {
	defer func() {
		if p := recover(); p != nil {
			a.log.Error("acme_panic", "domain", a.domain, "err", fmt.Sprint(p), "stack", string(debug.Stack()))
			a.resetAccount()
			cert, stage, err = nil, "internal", fmt.Errorf("%w: %v", errInternal, p)
		}
	}()
	return a.obtain(ctx)
}

// install puts c in service.
func (a *ACME) install(c *tls.Certificate) {
	a.cert.Store(c)
	a.notAfter.Set(float64(c.Leaf.NotAfter.Unix()))
}

// obtain gets a new certificate: one order, one http-01 challenge per
// pending authorization, then finalization with a fresh key. On failure it
// reports the stage that failed and releases authorizations left pending.
//
// When the CA no longer knows the account or refuses it (see
// accountProblem), the account state is reset, so that the next request
// registers afresh; at the order, the first request signed by the account,
// that happens at once and the order is placed again.
func (a *ACME) obtain(ctx context.Context) (_ *tls.Certificate, stage string, err error) {
	defer func() {
		if err != nil && accountProblem(err) {
			a.resetAccount()
		}
	}()
	if err := a.ensureAccount(ctx); err != nil {
		return nil, "account", err
	}
	order, err := a.client.AuthorizeOrder(ctx, acme.DomainIDs(a.domain))
	if err != nil && accountProblem(err) {
		p := newIssueError(a.domain, "order", err, time.Time{})
		a.log.Warn("acme_account_reset", "domain", a.domain, "acme_error", p.Type, "status", p.Status, "detail", p.Detail)
		a.resetAccount()
		if err := a.ensureAccount(ctx); err != nil {
			return nil, "account", err
		}
		order, err = a.client.AuthorizeOrder(ctx, acme.DomainIDs(a.domain))
	}
	if err != nil {
		return nil, "order", err
	}
	defer func() {
		if err != nil {
			a.releasePending(order.AuthzURLs)
		}
	}()
	for _, u := range order.AuthzURLs {
		if err := a.authorize(ctx, u); err != nil {
			return nil, "authorization", err
		}
	}
	// ready is a new variable: order must stay set for the deferred
	// release, also when WaitOrder fails and returns nil.
	ready, err := a.client.WaitOrder(ctx, order.URI)
	if err != nil {
		return nil, "order", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "finalize", err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{a.domain}}, key)
	if err != nil {
		return nil, "finalize", err
	}
	der, _, err := a.client.CreateOrderCert(ctx, ready.FinalizeURL, csr, true)
	if err != nil {
		return nil, "finalize", err
	}
	// Only the key and the name are checked: the CA's clock decides the
	// validity, and a certificate discarded for a skewed local clock would
	// be ordered again and again, into the CA's duplicate-certificate limit.
	cert, err := a.checkChain(der, key)
	if err != nil {
		return nil, "certificate", err
	}
	a.warnIfNotYetValid(cert.Leaf)
	// The certificate first, then the directory it came from: if the
	// second write is lost, a restart finds the previous directory's
	// record and orders again rather than serve a certificate as another
	// directory's.
	err = a.cache.put(a.domain, encodeCached(der, key))
	if err == nil {
		err = a.cache.put(a.directoryName(), []byte(a.directory+"\n"))
	}
	if err != nil {
		// The certificate is good: serve it rather than order another one
		// (which would spend the CA's duplicate-certificate limit).
		a.log.Warn("acme_cache_failed", "domain", a.domain, "err", err)
	}
	return cert, "", nil
}

// newClient is a client for the CA with no account state: no key, no
// account URL, no directory read yet.
func (a *ACME) newClient() *acme.Client {
	return &acme.Client{
		DirectoryURL: a.directory,
		HTTPClient:   a.httpClient,
		UserAgent:    acmeUserAgent,
		RetryBackoff: acmeRetryBackoff,
	}
}

// resetAccount forgets the account state: the next attempt reads the
// account key from the cache again, reads the CA's directory again and
// registers.
func (a *ACME) resetAccount() {
	a.registered = false
	a.keyEntry = ""
	a.client = a.newClient()
}

// accountProblem reports whether err is the CA saying it does not know the
// account (accountDoesNotExist, or a 404) or refuses it (unauthorized: a
// deactivated account, for one). Failed validations, which Let's Encrypt
// also reports as unauthorized, come as an *acme.AuthorizationError or an
// *acme.OrderError and are not account problems.
func accountProblem(err error) bool {
	var ae *acme.Error
	if !errors.As(err, &ae) {
		return false
	}
	typ := ae.ProblemType
	return ae.StatusCode == http.StatusNotFound ||
		typ == "urn:ietf:params:acme:error:accountDoesNotExist" || typ == "urn:ietf:params:acme:error:unauthorized"
}

// ensureAccount registers the account unless that is done. A key the CA
// refuses to register (unauthorized: it belongs to a deactivated account)
// is put aside and replaced by a new one, which is registered as a new
// account.
func (a *ACME) ensureAccount(ctx context.Context) error {
	if a.registered {
		return nil
	}
	err := a.register(ctx)
	if err != nil && accountProblem(err) && a.keyEntry != "" {
		var ae *acme.Error
		if errors.As(err, &ae) && ae.ProblemType == "urn:ietf:params:acme:error:unauthorized" {
			p := newIssueError(a.domain, "account", err, time.Time{})
			keptAs := a.keyEntry + ".refused"
			if rerr := a.cache.rename(a.keyEntry, keptAs); rerr != nil {
				a.resetAccount()
				return fmt.Errorf("%w: putting the refused account key aside: %w", errCache, rerr)
			}
			a.log.Error("acme_account_key_replaced", "domain", a.domain, "reason", "the CA refuses the account",
				"acme_error", p.Type, "status", p.Status, "detail", p.Detail, "kept_as", keptAs)
			a.resetAccount()
			err = a.register(ctx)
		}
	}
	if err != nil {
		a.resetAccount()
		return err
	}
	a.registered = true
	return nil
}

// register loads or creates the account key and registers it with the CA
// (an existing registration is fine).
func (a *ACME) register(ctx context.Context) error {
	if a.client.Key == nil {
		key, entry, err := a.accountKey()
		if err != nil {
			return err
		}
		a.client.Key, a.keyEntry = key, entry
	}
	acct := &acme.Account{}
	if a.email != "" {
		acct.Contact = []string{"mailto:" + a.email}
	}
	_, err := a.client.Register(ctx, acct, acme.AcceptTOS)
	var ae *acme.Error
	if errors.Is(err, acme.ErrAccountAlreadyExists) || (errors.As(err, &ae) && ae.StatusCode == http.StatusConflict) {
		err = nil
	}
	return err
}

// accountKey reads the account key from the cache and returns it with the
// entry it came from. With no key cached, it creates and stores a P-256
// one. A cached key that cannot be parsed is logged at error, put aside
// (its entry name with ".bad" appended) and replaced by a new one.
func (a *ACME) accountKey() (crypto.Signer, string, error) {
	entry := accountKeyName
	data, err := a.cache.get(entry)
	if errors.Is(err, autocert.ErrCacheMiss) {
		// Older autocert versions stored the key under this name.
		entry = legacyAccountKeyName
		data, err = a.cache.get(entry)
	}
	if errors.Is(err, autocert.ErrCacheMiss) {
		return a.newAccountKey()
	}
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", errCache, err)
	}
	var reason string
	if block, _ := pem.Decode(data); block == nil {
		reason = "not PEM"
	} else if key, err := parseKey(block); err != nil {
		reason = "cannot be parsed: " + err.Error()
	} else {
		return key, entry, nil
	}
	keptAs := entry + ".bad"
	if err := a.cache.rename(entry, keptAs); err != nil {
		return nil, "", fmt.Errorf("%w: the account key %s, and putting it aside failed: %w", errCache, reason, err)
	}
	a.log.Error("acme_account_key_unreadable", "domain", a.domain, "reason", reason, "kept_as", keptAs)
	return a.newAccountKey()
}

// newAccountKey creates a P-256 account key and stores it in the cache.
func (a *ACME) newAccountKey() (crypto.Signer, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, "", err
	}
	if err := a.cache.put(accountKeyName, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
		return nil, "", fmt.Errorf("%w: %w", errCache, err)
	}
	return key, accountKeyName, nil
}

// authorize satisfies one authorization with its http-01 challenge and
// waits for the CA's verdict. A valid authorization needs nothing.
func (a *ACME) authorize(ctx context.Context, url string) error {
	z, err := a.client.GetAuthorization(ctx, url)
	if err != nil {
		return err
	}
	switch z.Status {
	case acme.StatusValid:
		return nil
	case acme.StatusPending:
	default:
		return fmt.Errorf("%w: authorization is %s", errAuthzState, z.Status)
	}
	var chal *acme.Challenge
	for _, c := range z.Challenges {
		if c.Type == "http-01" {
			chal = c
			break
		}
	}
	if chal == nil {
		return errNoHTTP01
	}
	keyAuth, err := a.client.HTTP01ChallengeResponse(chal.Token)
	if err != nil {
		return err
	}
	a.tokensMu.Lock()
	a.tokens[chal.Token] = keyAuth
	a.tokensMu.Unlock()
	defer func() {
		a.tokensMu.Lock()
		delete(a.tokens, chal.Token)
		a.tokensMu.Unlock()
	}()
	if _, err := a.client.Accept(ctx, chal); err != nil {
		return err
	}
	_, err = a.client.WaitAuthorization(ctx, z.URI)
	return err
}

// releasePending deactivates the order's authorizations that are still
// pending, so a failed attempt does not hold the CA's pending-authorization
// quota. Errors are ignored: this is housekeeping. It is skipped once the
// manager is closing (the CA lets pending authorizations expire on their
// own), and Close cuts one under way short: shutdown never waits on the CA.
// An attempt that ran out of time is still released, within releaseTimeout.
func (a *ACME) releasePending(urls []string) {
	if a.stopCtx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(a.stopCtx, releaseTimeout)
	defer cancel()
	for _, u := range urls {
		if z, err := a.client.GetAuthorization(ctx, u); err == nil && z.Status == acme.StatusPending {
			_ = a.client.RevokeAuthorization(ctx, u)
		}
	}
}

// loadCached returns the cached certificate if it is for the domain, from
// the configured ACME directory and not expired, else nil. An entry it
// cannot use is logged (acme_cache_ignored) with the reason; a certificate
// not yet valid by the local clock is served (see warnIfNotYetValid).
func (a *ACME) loadCached() *tls.Certificate {
	data, err := a.cache.get(a.domain)
	if errors.Is(err, autocert.ErrCacheMiss) {
		return nil
	}
	if err != nil {
		a.log.Warn("acme_cache_ignored", "domain", a.domain, "reason", "unreadable", "err", err)
		return nil
	}
	ignore := func(reason string, err error) *tls.Certificate {
		if err != nil {
			a.log.Warn("acme_cache_ignored", "domain", a.domain, "reason", reason, "err", err)
		} else {
			a.log.Warn("acme_cache_ignored", "domain", a.domain, "reason", reason)
		}
		return nil
	}
	// A certificate from another directory (typically Let's Encrypt
	// staging, after a trial) is not served. An entry without the record
	// predates it (or was written by autocert) and is taken as the
	// configured directory's.
	if dir, err := a.cache.get(a.directoryName()); err == nil {
		if got := strings.TrimSpace(string(dir)); got != a.directory {
			a.log.Warn("acme_cache_ignored", "domain", a.domain, "reason", "issued by another ACME directory",
				"cached_directory", got)
			return nil
		}
	} else if !errors.Is(err, autocert.ErrCacheMiss) {
		return ignore("directory record unreadable", err)
	}
	var keyBlock *pem.Block
	var chain [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE":
			chain = append(chain, b.Bytes)
		case keyBlock == nil && strings.Contains(b.Type, "PRIVATE KEY"):
			keyBlock = b
		}
	}
	if keyBlock == nil || len(chain) == 0 {
		return ignore("no private key and certificate in PEM", nil)
	}
	key, err := parseKey(keyBlock)
	if err != nil {
		return ignore("private key unreadable", nil)
	}
	c, err := a.checkChain(chain, key)
	if err != nil {
		return ignore("unusable certificate", err)
	}
	if !a.now().Before(c.Leaf.NotAfter) {
		a.log.Warn("acme_cache_ignored", "domain", a.domain, "reason", "expired", "not_after", c.Leaf.NotAfter)
		return nil
	}
	// A certificate not yet valid by the local clock is served all the
	// same: the clock is probably wrong, and ordering a new one would not
	// help.
	a.warnIfNotYetValid(c.Leaf)
	return c
}

// directoryName is the cache entry recording which ACME directory issued
// the cached certificate.
func (a *ACME) directoryName() string { return a.domain + "+directory" }

// checkChain turns a DER chain and its key into a certificate to serve,
// after checking that the key matches and the leaf names the domain. The
// validity period is the caller's to judge.
func (a *ACME) checkChain(chain [][]byte, key crypto.Signer) (*tls.Certificate, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: empty chain", errBadCertificate)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadCertificate, err)
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%w: the key does not match", errBadCertificate)
	}
	if err := leaf.VerifyHostname(a.domain); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadCertificate, err)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// warnIfNotYetValid logs, at error, a certificate whose validity starts
// after the local clock's now: clients with a correct clock accept it, but
// the local clock is probably wrong, and renewals are timed by it.
func (a *ACME) warnIfNotYetValid(leaf *x509.Certificate) {
	if now := a.now(); now.Before(leaf.NotBefore) {
		a.log.Error("acme_certificate_not_yet_valid", "domain", a.domain, "not_before", leaf.NotBefore,
			"not_after", leaf.NotAfter, "clock_behind", leaf.NotBefore.Sub(now).Round(time.Second).String())
	}
}

// encodeCached is the cache entry for a certificate, in autocert's layout:
// the PEM private key followed by the PEM chain.
func encodeCached(chain [][]byte, key *ecdsa.PrivateKey) []byte {
	var buf bytes.Buffer
	der, _ := x509.MarshalECPrivateKey(key) // cannot fail for a P-256 key
	_ = pem.Encode(&buf, &pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	for _, c := range chain {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c})
	}
	return buf.Bytes()
}

// parseKey reads an EC (SEC 1), RSA (PKCS #1) or PKCS #8 private key.
func parseKey(b *pem.Block) (crypto.Signer, error) {
	var key any
	var err error
	switch b.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a signing key")
	}
	return s, nil
}

// LoadCertPool reads PEM CA certificates from file into a new pool, for
// ACMEConfig.RootCAs. It fails with an error wrapping ErrCACert when the
// file cannot be read or holds no certificate.
func LoadCertPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCACert, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrCACert, file)
	}
	return pool, nil
}
