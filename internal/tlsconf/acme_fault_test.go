package tlsconf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
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
