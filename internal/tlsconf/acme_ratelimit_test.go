package tlsconf

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/acmetest"
)

func TestNextAttemptAt(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(mins ...int) []time.Time {
		var ts []time.Time
		for _, m := range mins {
			ts = append(ts, t0.Add(time.Duration(m)*time.Minute))
		}
		return ts
	}
	for _, tc := range []struct {
		name       string
		recent     []time.Time // failures in the last hour, the one at now last
		backoff    time.Duration
		retryAfter time.Duration
		want       time.Duration // after the last failure
	}{
		{"the backoff alone", at(0, 1, 3), 4 * time.Minute, 0, 4 * time.Minute},
		// failures at 0, 1, 3, 7 min: the fifth attempt waits for minute 60,
		// when the one at 0 leaves the window
		{"four failures in the hour", at(0, 1, 3, 7), 8 * time.Minute, 0, 53 * time.Minute},
		{"Retry-After beyond the backoff", at(0), time.Minute, 2 * time.Hour, 2 * time.Hour},
		{"Retry-After within the backoff", at(0), time.Hour, time.Minute, time.Hour},
		{"Retry-After capped", at(0), time.Minute, 30 * 24 * time.Hour, maxRetryAfter},
	} {
		now := tc.recent[len(tc.recent)-1]
		if got := nextAttemptAt(now, tc.backoff, tc.retryAfter, tc.recent).Sub(now); got != tc.want {
			t.Errorf("%s: next attempt %v after the failure, want %v", tc.name, got, tc.want)
		}
	}
}

// newPebbleACMEIn is a manager against pb on the given cache directory.
func newPebbleACMEIn(t *testing.T, pb *acmetest.CA, cacheDir string, logs *lockedBuffer, retryBase time.Duration) *ACME {
	t.Helper()
	a, err := NewACME(ACMEConfig{
		Domain:       testDomain,
		CacheDir:     cacheDir,
		DirectoryURL: pb.DirectoryURL,
		RootCAs:      pb.APIRoots,
		Log:          slog.New(slog.NewJSONHandler(logs, nil)),
		RetryBase:    retryBase,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// However short the backoff, no hour holds more than four failed attempts
// (Let's Encrypt allows five failed validations per hostname per hour), and
// a restart remembers both the attempts and the wait.
func TestACMEFailedAttemptsPerHourAcrossRestarts(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
	pb.SetResolving(false) // every validation fails
	cacheDir := newCacheDir(t)
	logs := new(lockedBuffer)
	a := newPebbleACMEIn(t, pb, cacheDir, logs, 50*time.Millisecond)
	a.Start()

	deadline := time.Now().Add(6 * waitLimit)
	for strings.Count(logs.String(), `"msg":"acme_failed"`) < maxAttemptsPerWindow {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d failures in time:\n%s", maxAttemptsPerWindow, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // without the hourly cap the fifth attempt came after 400 ms
	if n := pb.Orders(); n != maxAttemptsPerWindow {
		t.Fatalf("%d orders, want %d in the first hour", n, maxAttemptsPerWindow)
	}
	a.mu.Lock()
	retryAt := a.retryAt
	a.mu.Unlock()
	if wait := time.Until(retryAt); wait < 58*time.Minute {
		t.Errorf("next attempt in %v, want about an hour after the first failure", wait)
	}
	st, err := os.Stat(filepath.Join(cacheDir, testDomain+"+failures"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("failure record: %v, want a 0600 file", err)
	}
	a.Close()

	// A restart keeps the wait: handshakes fail at once with the last
	// failure, and nothing is ordered.
	logs2 := new(lockedBuffer)
	b := newPebbleACMEIn(t, pb, cacheDir, logs2, 50*time.Millisecond)
	b.Start()
	start := time.Now()
	_, err = b.GetCertificate(&tls.ClientHelloInfo{ServerName: testDomain})
	var ie *IssueError
	if !errors.As(err, &ie) || ie.Type != "connection" || !ie.RetryAt.Equal(retryAt) {
		t.Errorf("after a restart GetCertificate = %v, want the remembered failure due at %v", err, retryAt)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the handshake waited %v", d)
	}
	time.Sleep(time.Second)
	if n := pb.Orders(); n != maxAttemptsPerWindow {
		t.Errorf("%d orders after the restart, want still %d", n, maxAttemptsPerWindow)
	}
	if !strings.Contains(logs2.String(), `"msg":"acme_backoff_restored"`) {
		t.Errorf("no acme_backoff_restored:\n%s", logs2)
	}
}

// rateLimitedCA is an ACME CA on 127.0.0.1 that refuses every new account
// with rateLimited and the given Retry-After (seconds).
func rateLimitedCA(t *testing.T, retryAfter int) string {
	t.Helper()
	var nonce atomic.Int64
	var base string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Replay-Nonce", "nonce"+strconv.FormatInt(nonce.Add(1), 10))
		w.Header().Set("Cache-Control", "no-store")
		switch r.URL.Path {
		case "/directory":
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{
				"newNonce": base + "/nonce", "newAccount": base + "/account", "newOrder": base + "/order",
			})
		case "/nonce":
			w.WriteHeader(http.StatusOK)
		case "/account":
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many registrations"}`))
		default:
			t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	base = srv.URL
	return base + "/directory"
}

// A CA's rateLimited error with Retry-After delays the next attempt that
// long when it exceeds the backoff.
func TestACMEHonoursRetryAfter(t *testing.T) {
	logs := new(lockedBuffer)
	a := newTestACME(t, ACMEConfig{DirectoryURL: rateLimitedCA(t, 7200), RetryBase: time.Minute,
		Log: slog.New(slog.NewJSONHandler(logs, nil))})
	a.Start()
	_, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: testDomain})
	var ie *IssueError
	if !errors.As(err, &ie) || ie.Type != "rateLimited" {
		t.Fatalf("GetCertificate = %v, want a rateLimited failure\n%s", err, logs)
	}
	if wait := time.Until(ie.RetryAt); wait < 119*time.Minute || wait > 2*time.Hour {
		t.Errorf("next attempt in %v, want the CA's Retry-After of 2h", wait)
	}
}

// A certificate close to its expiry (renewals failing for weeks) is
// reported at error, at most once an hour, and so is an expired one.
func TestACMEReportsExpiringAndExpiredCertificate(t *testing.T) {
	ca := newTestCA(t)
	dir := newCacheDir(t)
	notAfter := time.Now().Add(3 * 24 * time.Hour)
	seedCache(t, dir, testDomain, ca.issueValid(t, testDomain, time.Now().Add(-80*24*time.Hour), notAfter))
	logs := new(lockedBuffer)
	// The certificate is in its renewal window; the CA refuses for two hours.
	a := newTestACME(t, ACMEConfig{CacheDir: dir, DirectoryURL: rateLimitedCA(t, 7200),
		Log: slog.New(slog.NewJSONHandler(logs, nil))})
	a.Start()
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(logs.String(), `"level":"ERROR","msg":"acme_certificate_expiring"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no acme_certificate_expiring from the scheduler:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.Close() // the checks below drive checkExpiry by hand

	count := func(event string) int { return strings.Count(logs.String(), `"msg":"`+event+`"`) }
	start := time.Now()
	for _, step := range []struct {
		at                time.Duration // after start
		expiring, expired int           // events so far
	}{
		{30 * time.Minute, 1, 0},                // within the hour: not repeated
		{61 * time.Minute, 2, 0},                // an hour on: repeated
		{3*24*time.Hour + time.Minute, 2, 1},    // past NotAfter
		{3*24*time.Hour + 30*time.Minute, 2, 1}, // within the hour
		{3*24*time.Hour + 62*time.Minute, 2, 2}, // an hour on
	} {
		a.checkExpiry(start.Add(step.at))
		if e, x := count("acme_certificate_expiring"), count("acme_certificate_expired"); e != step.expiring || x != step.expired {
			t.Errorf("at +%v: %d expiring, %d expired events; want %d, %d", step.at, e, x, step.expiring, step.expired)
		}
	}
}
