package tlsconf

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/pyrycode/pyrycode-relay/internal/acmetest"
)

// pebble's paths for new accounts and new orders.
const (
	newAccountPath = "/sign-me-up"
	newOrderPath   = "/order-plz"
)

// cachedAccountKey reads the account key the manager stored.
func cachedAccountKey(t *testing.T, a *ACME) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(a.cache.dir, accountKeyName))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s is not PEM", accountKeyName)
	}
	key, err := parseKey(block)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// pebbleClient is an ACME client of pb with key, as an operator's tool
// would be.
func pebbleClient(t *testing.T, pb *acmetest.CA, key crypto.Signer) *acme.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pb.APIRoots, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &acme.Client{Key: key, DirectoryURL: pb.DirectoryURL, HTTPClient: &http.Client{Transport: tr, Timeout: waitLimit}}
}

// attemptOK makes one attempt on the test goroutine (the scheduler is not
// started) and fails the test unless it put a new certificate in service.
func attemptOK(t *testing.T, a *ACME, logs *lockedBuffer) *tls.Certificate {
	t.Helper()
	before := a.cert.Load()
	a.attempt(t.Context())
	a.mu.Lock()
	lastErr := a.lastErr
	a.mu.Unlock()
	c := a.cert.Load()
	if lastErr != nil || c == nil || c == before {
		t.Fatalf("attempt failed: %v\n%s", lastErr, logs)
	}
	return c
}

// An account deactivated at the CA (by the operator, or by the CA) used to
// fail every attempt until a restart: the manager kept its registered
// state, and the key stayed bound to the deactivated account. Now the next
// attempt puts the refused key aside, registers a new account with a new
// key and gets its certificate.
func TestACMEDeactivatedAccountIsReplaced(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
	logs := new(lockedBuffer)
	a := startPebbleACME(t, pb, logs, time.Minute)
	first := attemptOK(t, a, logs)

	oldKey := cachedAccountKey(t, a)
	oldPEM, err := os.ReadFile(filepath.Join(a.cache.dir, accountKeyName))
	if err != nil {
		t.Fatal(err)
	}
	if err := pebbleClient(t, pb, oldKey).DeactivateReg(t.Context()); err != nil {
		t.Fatalf("deactivating the account: %v", err)
	}

	second := attemptOK(t, a, logs) // a renewal, forced
	if bytes.Equal(first.Leaf.Raw, second.Leaf.Raw) {
		t.Error("the same certificate again")
	}
	if _, err := second.Leaf.Verify(x509Opts(t, pb, second.Certificate)); err != nil {
		t.Errorf("new certificate does not chain to pebble's root: %v", err)
	}
	newKey := cachedAccountKey(t, a)
	if pub, ok := newKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || pub.Equal(oldKey.Public()) {
		t.Fatal("the account key was not replaced")
	}
	acct, err := pebbleClient(t, pb, newKey).GetReg(t.Context(), "")
	if err != nil || acct.Status != acme.StatusValid {
		t.Errorf("new account: %+v, %v; want a valid account", acct, err)
	}
	kept, err := os.ReadFile(filepath.Join(a.cache.dir, accountKeyName+".refused"))
	if err != nil || !bytes.Equal(kept, oldPEM) {
		t.Errorf("the refused key was not kept aside: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(a.cache.dir, accountKeyName+".refused")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kept-aside key: %v, %v", fi, err)
	}
	out := logs.String()
	for _, want := range []string{
		`"level":"WARN","msg":"acme_account_reset"`,
		`"level":"ERROR","msg":"acme_account_key_replaced"`,
		`"kept_as":"acme_account+key.refused"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "acme_failed") {
		t.Errorf("the recovery cost a failed attempt:\n%s", out)
	}
	if n := pb.Orders(); n != 2 {
		t.Errorf("%d orders, want 2", n)
	}
}

// forgetAccountOnce answers the first new order after armed is set with
// the given status and ACME problem, as a CA that lost or refuses the
// account does, and counts new-account requests.
type forgetAccountOnce struct {
	next          http.RoundTripper
	armed         *atomic.Bool
	status        int
	problem       string
	registrations *atomic.Int32
}

func (f forgetAccountOnce) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && r.URL.Path == newAccountPath {
		f.registrations.Add(1)
	}
	if r.Method == http.MethodPost && r.URL.Path == newOrderPath && f.armed.CompareAndSwap(true, false) {
		body := `{"type":"` + f.problem + `","detail":"No account exists with the provided key"}`
		return &http.Response{
			StatusCode: f.status,
			Header:     http.Header{"Content-Type": {"application/problem+json"}},
			Body:       io.NopCloser(strings.NewReader(body)),
			Request:    r,
		}, nil
	}
	return f.next.RoundTrip(r)
}

// A CA that no longer knows the account (accountDoesNotExist, or a 404 on a
// request signed by it) gets the key registered again, and the order is
// placed again in the same attempt. The key is kept: the CA did not
// refuse it.
func TestACMEForgottenAccountIsRegisteredAgain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  int
		problem string
	}{
		{"accountDoesNotExist", http.StatusBadRequest, "urn:ietf:params:acme:error:accountDoesNotExist"},
		{"404", http.StatusNotFound, "urn:ietf:params:acme:error:malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
			logs := new(lockedBuffer)
			a := startPebbleACME(t, pb, logs, time.Minute)
			fault := forgetAccountOnce{a.httpClient.Transport, new(atomic.Bool), tc.status, tc.problem, new(atomic.Int32)}
			a.httpClient.Transport = fault
			attemptOK(t, a, logs)
			key := cachedAccountKey(t, a)

			fault.armed.Store(true)
			attemptOK(t, a, logs)
			if fault.armed.Load() {
				t.Fatal("the fault was not injected")
			}
			if n := fault.registrations.Load(); n != 2 {
				t.Errorf("%d registrations, want 2 (the first, and again after the CA forgot the account)", n)
			}
			if pub, ok := cachedAccountKey(t, a).Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
				t.Error("the account key was replaced; the CA did not refuse it")
			}
			out := logs.String()
			if !strings.Contains(out, `"level":"WARN","msg":"acme_account_reset"`) || strings.Contains(out, "acme_account_key_replaced") {
				t.Errorf("want acme_account_reset and no key replacement:\n%s", out)
			}
		})
	}
}

// An account key in the cache that cannot be parsed (a torn write, a
// corrupted disk) used to fail every attempt as a cache error. Now it is
// logged at error with the reason, kept aside as acme_account+key.bad, and
// a new key registers a new account.
func TestACMEUnreadableAccountKeyIsKeptAside(t *testing.T) {
	for _, tc := range []struct{ name, content, reason string }{
		{"empty", "", "not PEM"},
		{"not PEM", "garbage\n", "not PEM"},
		{"bad key in PEM", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", "cannot be parsed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
			logs := new(lockedBuffer)
			a := startPebbleACME(t, pb, logs, time.Minute)
			if err := os.WriteFile(filepath.Join(a.cache.dir, accountKeyName), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			attemptOK(t, a, logs)
			cachedAccountKey(t, a) // a new, readable key
			kept, err := os.ReadFile(filepath.Join(a.cache.dir, accountKeyName+".bad"))
			if err != nil || string(kept) != tc.content {
				t.Errorf("acme_account+key.bad = %q, %v; want the unreadable key", kept, err)
			}
			out := logs.String()
			if !strings.Contains(out, `"level":"ERROR","msg":"acme_account_key_unreadable"`) ||
				!strings.Contains(out, `"reason":"`+tc.reason) || !strings.Contains(out, `"kept_as":"acme_account+key.bad"`) {
				t.Errorf("no acme_account_key_unreadable error with the reason %q:\n%s", tc.reason, out)
			}
		})
	}
}

// Only the CA's word on the account resets it: failed validations, which
// Let's Encrypt reports as unauthorized too, arrive wrapped in an
// authorization or order error.
func TestAccountProblem(t *testing.T) {
	problem := func(typ string, status int) *acme.Error {
		return &acme.Error{ProblemType: "urn:ietf:params:acme:error:" + typ, StatusCode: status}
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"accountDoesNotExist", problem("accountDoesNotExist", 400), true},
		{"unauthorized", problem("unauthorized", 403), true},
		{"404", problem("malformed", 404), true},
		{"rate limited", problem("rateLimited", 429), false},
		{"server error", problem("serverInternal", 500), false},
		{"failed validation", &acme.AuthorizationError{Errors: []error{problem("unauthorized", 403)}}, false},
		{"invalid order", &acme.OrderError{Problem: problem("unauthorized", 403)}, false},
		{"network", errors.New("connection reset by peer"), false},
	} {
		if got := accountProblem(tc.err); got != tc.want {
			t.Errorf("%s: accountProblem = %v, want %v", tc.name, got, tc.want)
		}
	}
}
