package tlsconf

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/acmetest"
)

// closeLimit is how long Close may take with an attempt under way. Close
// only cancels and waits for the scheduler, which takes milliseconds; the
// bound is loose for a loaded machine yet far below the relay's 10 s drain
// budget, which Close must not eat into.
const closeLimit = 3 * time.Second

// hangOrderPoll makes the order poll hang until the request is cancelled,
// as a CA that keeps the order "processing" would, and reports on polling
// that the poll has started.
type hangOrderPoll struct {
	next    http.RoundTripper
	polling chan struct{}
}

func (h hangOrderPoll) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasPrefix(r.URL.Path, orderPollPath) {
		select {
		case h.polling <- struct{}{}:
		default:
		}
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return h.next.RoundTrip(r)
}

// Close (what the relay does on SIGTERM) while the scheduler waits for the
// order ends the attempt quietly and at once.
func TestACMECloseWhileWaitingForTheOrder(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
	logs := new(lockedBuffer)
	a := startPebbleACME(t, pb, logs, time.Minute)
	polling := make(chan struct{}, 1)
	a.client.HTTPClient.Transport = hangOrderPoll{a.client.HTTPClient.Transport, polling}
	a.Start()
	select {
	case <-polling:
	case <-time.After(3 * waitLimit):
		t.Fatalf("the attempt never polled the order:\n%s", logs)
	}
	start := time.Now()
	a.Close()
	if d := time.Since(start); d > closeLimit {
		t.Errorf("Close took %v", d.Round(time.Millisecond))
	}
	if out := logs.String(); strings.Contains(out, "acme_failed") || strings.Contains(out, "acme_panic") {
		t.Errorf("an attempt cut short by Close was logged:\n%s", out)
	}
}

// blackholeAfterAccept passes requests to the CA until the challenge is
// accepted; from then on the CA stops answering (a network partition) and
// every request hangs until its context ends. accepted is closed at that
// moment.
type blackholeAfterAccept struct {
	next     http.RoundTripper
	gone     *atomic.Bool
	accepted chan struct{}
}

// challengePath is the path prefix of pebble's challenge URLs.
const challengePath = "/chalZ/"

func (b blackholeAfterAccept) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.gone.Load() || strings.HasPrefix(r.URL.Path, challengePath) {
		if b.gone.CompareAndSwap(false, true) {
			close(b.accepted)
		}
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return b.next.RoundTrip(r)
}

// Close with an unresponsive CA does not wait to release the attempt's
// pending authorization: it used to give that release 10 s, the whole drain
// budget of the relay, which closes the manager during shutdown.
func TestACMECloseDoesNotWaitForAnUnresponsiveCA(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
	logs := new(lockedBuffer)
	a := startPebbleACME(t, pb, logs, time.Minute)
	accepted := make(chan struct{})
	a.client.HTTPClient.Transport = blackholeAfterAccept{a.client.HTTPClient.Transport, new(atomic.Bool), accepted}
	a.Start()
	select {
	case <-accepted:
	case <-time.After(3 * waitLimit):
		t.Fatalf("the attempt never accepted the challenge:\n%s", logs)
	}
	start := time.Now()
	a.Close()
	if d := time.Since(start); d > closeLimit {
		t.Errorf("Close took %v", d.Round(time.Millisecond))
	}
}
