package tlsconf

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pyrycode/pyrycode-relay/internal/acmetest"
)

// orderPollPath is the path prefix of pebble's order URLs, which WaitOrder
// polls with POST-as-GET once the authorizations are valid.
const orderPollPath = "/my-order/"

// failOrderPoll passes every request to the CA but fails the order poll, as
// a connection reset at that moment would.
type failOrderPoll struct{ next http.RoundTripper }

func (f failOrderPoll) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasPrefix(r.URL.Path, orderPollPath) {
		return nil, errors.New("connection reset by peer")
	}
	return f.next.RoundTrip(r)
}

// A network error while waiting for the order is an ordinary failed
// attempt at the order stage. It used to overwrite the order with nil, and
// the deferred release of pending authorizations then dereferenced it: a
// panic on the scheduler goroutine, which takes the whole relay down.
func TestACMEOrderPollFailureIsAnOrdinaryFailure(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
	a := startPebbleACME(t, pb, new(lockedBuffer), time.Minute)
	a.client.HTTPClient.Transport = failOrderPoll{a.client.HTTPClient.Transport}

	var recovered any
	var stage string
	var err error
	func() {
		defer func() { recovered = recover() }()
		_, stage, err = a.obtain(t.Context())
	}()
	if recovered != nil {
		t.Fatalf("obtain panicked: %v", recovered)
	}
	if err == nil || stage != "order" {
		t.Fatalf("obtain = stage %q, %v; want a failure at the order stage", stage, err)
	}
}

// panicOnceSigner is an account key whose first signature panics,
// standing in for any bug reached from the scheduler goroutine; later
// signatures are made by key.
type panicOnceSigner struct {
	key      *ecdsa.PrivateKey
	panicked *atomic.Bool
}

func (p panicOnceSigner) Public() crypto.PublicKey { return p.key.Public() }

func (p panicOnceSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if p.panicked.CompareAndSwap(false, true) {
		panic("boom in the ACME client")
	}
	return p.key.Sign(r, digest, opts)
}

// A panic during an attempt is logged at error, counted as a failure and
// retried after the backoff; the relay (here: the test binary) survives
// and the retry gets a certificate.
func TestACMEPanicInAttemptIsRecovered(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
	logs := new(lockedBuffer)
	a := startPebbleACME(t, pb, logs, 200*time.Millisecond)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a.client.Key = panicOnceSigner{key, new(atomic.Bool)}
	a.Start()

	deadline := time.Now().Add(3 * waitLimit)
	for a.cert.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no certificate after the recovered panic:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := logs.String()
	if !strings.Contains(out, `"level":"ERROR","msg":"acme_panic"`) || !strings.Contains(out, "boom in the ACME client") {
		t.Errorf("no acme_panic at error level:\n%s", out)
	}
	if !strings.Contains(out, `"msg":"acme_failed"`) || !strings.Contains(out, `"acme_error":"internal"`) {
		t.Errorf("the panic was not an acme_failed of type internal:\n%s", out)
	}
	if n := testutil.ToFloat64(a.failuresTotal); n != 1 {
		t.Errorf("failures counted: %v, want 1", n)
	}
}

// A cached certificate whose validity starts after the local clock's now
// (the clock is behind) is served, with an error in the log: discarding it
// would order a new one, which the same clock would judge the same way.
func TestACMEServesCachedCertificateNotYetValid(t *testing.T) {
	ca := newTestCA(t)
	pair := ca.issueValid(t, testDomain, time.Now().Add(2*time.Hour), time.Now().Add(90*24*time.Hour))
	dir := newCacheDir(t)
	seedCache(t, dir, testDomain, pair)
	logs := new(lockedBuffer)
	a := newTestACME(t, ACMEConfig{CacheDir: dir, Log: slog.New(slog.NewJSONHandler(logs, nil))})
	c := a.cert.Load()
	if c == nil || !bytes.Equal(c.Leaf.Raw, pair.leafDER) {
		t.Fatalf("the cached certificate is not served:\n%s", logs)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"acme_certificate_not_yet_valid"`) {
		t.Errorf("no acme_certificate_not_yet_valid error:\n%s", logs)
	}
}

// A certificate fresh from the CA is checked for its key and name only. With
// the local clock two hours behind, it used to be thrown away as not yet
// valid, and each retry ordered another duplicate (Let's Encrypt allows 5 a
// week). Now it is cached and served, and the skew is logged as an error.
func TestACMEFreshCertificateWithClockBehind(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
	logs := new(lockedBuffer)
	a := startPebbleACME(t, pb, logs, time.Minute)
	a.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	a.Start()

	c, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: testDomain})
	if err != nil {
		t.Fatalf("GetCertificate = %v\n%s", err, logs)
	}
	if _, err := c.Leaf.Verify(x509Opts(t, pb, c.Certificate)); err != nil {
		t.Errorf("served certificate does not verify with a correct clock: %v", err)
	}
	if n := pb.Orders(); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
	out := logs.String()
	if !strings.Contains(out, `"level":"ERROR","msg":"acme_certificate_not_yet_valid"`) || strings.Contains(out, "acme_failed") {
		t.Errorf("want an acme_certificate_not_yet_valid error and no failure:\n%s", out)
	}
	if cached := a.loadCached(); cached == nil || !bytes.Equal(cached.Leaf.Raw, c.Leaf.Raw) {
		t.Error("the certificate was not cached")
	}
}

// A new certificate that the local clock already finds due for renewal (a
// clock far ahead, or a renewal window longer than the lifetime) is served,
// but counts as a failed attempt: the next order waits for the backoff
// instead of following at once, again and again.
func TestACMECertificateAlreadyDueIsNotReorderedAtOnce(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain, Validity: time.Minute})
	logs := new(lockedBuffer)
	a := startPebbleACME(t, pb, logs, time.Minute)
	a.renewBefore = 2 * time.Minute // longer than the lifetime: due as soon as issued
	a.Start()

	if _, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: testDomain}); err != nil {
		t.Fatalf("GetCertificate = %v\n%s", err, logs)
	}
	deadline := time.Now().Add(3 * waitLimit)
	for !strings.Contains(logs.String(), `"msg":"acme_failed"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no acme_failed:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // room for the back-to-back orders this used to make
	if n := pb.Orders(); n != 1 {
		t.Errorf("%d orders, want 1 until the backoff has passed", n)
	}
	if out := logs.String(); !strings.Contains(out, `"acme_error":"already_due"`) || !strings.Contains(out, `"retry_in":"1m0s"`) {
		t.Errorf("want an acme_failed of type already_due retried in 1m:\n%s", out)
	}
	if _, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: testDomain}); err != nil {
		t.Errorf("the certificate is not served: %v", err)
	}
}
