package tlsconf

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/acmetest"
)

// startPebbleACME runs a manager against an in-process pebble whose
// http-01 requests reach the manager's challenge handler.
func startPebbleACME(t *testing.T, pb *acmetest.CA, logs *lockedBuffer, retryBase time.Duration) *ACME {
	t.Helper()
	a, err := NewACME(ACMEConfig{
		Domain:       testDomain,
		CacheDir:     newCacheDir(t),
		DirectoryURL: pb.DirectoryURL,
		RootCAs:      pb.APIRoots,
		Log:          slog.New(slog.NewJSONHandler(logs, nil)),
		RetryBase:    retryBase,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	srv := httptest.NewServer(a.ChallengeHandler())
	t.Cleanup(srv.Close)
	pb.SetHTTPTarget(srv.Listener.Addr().String())
	return a
}

func TestACMEHandshakesAgainstPebble(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
	pb.SetResolving(false)
	logs := new(lockedBuffer)
	a := startPebbleACME(t, pb, logs, 2*time.Second)
	a.Start()
	hello := &tls.ClientHelloInfo{ServerName: testDomain}

	// The first handshake waits for the attempt under way and gets its failure.
	_, err := a.GetCertificate(hello)
	var first *IssueError
	if !errors.As(err, &first) {
		t.Fatalf("GetCertificate = %v, want an *IssueError", err)
	}
	if first.Domain != testDomain || first.Stage != "authorization" || first.Type != "connection" {
		t.Errorf("failure %+v, want an authorization failure of type connection for %s", first, testDomain)
	}

	// Later handshakes fail at once with the same failure and order nothing.
	for range 20 {
		if _, err := a.GetCertificate(hello); err != first {
			t.Fatalf("GetCertificate during the backoff = %v, want the remembered failure", err)
		}
	}
	if n := pb.Orders(); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
	if n := strings.Count(logs.String(), `"msg":"acme_failed"`); n != 1 {
		t.Errorf("%d acme_failed events, want 1:\n%s", n, logs)
	}

	// Once the challenge is reachable the retry succeeds and resets the backoff.
	pb.SetResolving(true)
	deadline := time.Now().Add(waitLimit * 3)
	for a.cert.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no certificate after the retry:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, err := a.GetCertificate(hello)
	if err != nil || c.Leaf.VerifyHostname(testDomain) != nil {
		t.Fatalf("GetCertificate after issuance = %v, %v", c, err)
	}
	if _, err := c.Leaf.Verify(x509Opts(t, pb, c.Certificate)); err != nil {
		t.Errorf("issued certificate does not chain to pebble's root: %v", err)
	}
	a.mu.Lock()
	failures, lastErr := a.failures, a.lastErr
	a.mu.Unlock()
	if failures != 0 || lastErr != nil {
		t.Errorf("after a success: %d failures, last error %v; want a reset backoff", failures, lastErr)
	}

	// Close keeps the certificate in service and still refuses other names.
	a.Close()
	if got, err := a.GetCertificate(hello); err != nil || got != c {
		t.Errorf("after Close: %v, %v; want the same certificate", got, err)
	}
	if _, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.example.test"}); err == nil {
		t.Error("another name served after Close")
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("key material in the log")
	}
}

// Close during the first attempt ends it without logging a failure, and a
// handshake waiting for it is released.
func TestACMECloseDuringAttempt(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
	logs := new(lockedBuffer)
	a := startPebbleACME(t, pb, logs, time.Minute)
	pb.SetHTTPTarget("127.0.0.1:1") // validation hangs on nothing; the attempt is still under way at Close
	a.Start()
	errc := make(chan error, 1)
	go func() {
		_, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: testDomain})
		errc <- err
	}()
	a.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("a certificate came out of a closed manager")
		}
	case <-time.After(waitLimit):
		t.Fatal("a waiting handshake was not released by Close")
	}
	if strings.Contains(logs.String(), "acme_failed") {
		t.Errorf("an attempt cut short by Close was logged as a failure:\n%s", logs)
	}
}
