package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A cached certificate is tied to the ACME directory that issued it: after a
// trial against Let's Encrypt staging, dropping --acme-directory must not
// leave the staging certificate (which no browser or phone trusts) in
// service until its renewal 60 days later.
func TestACMECachedCertificateFromAnotherDirectoryIsIgnored(t *testing.T) {
	ca := newTestCA(t)
	pair := ca.issue(t, testDomain)
	const staging = "https://acme-staging.example.test/directory"

	for _, tc := range []struct {
		name   string
		record *string // content of the directory record; nil: none
		served bool
	}{
		{"record names another directory", ptr(staging + "\n"), false},
		{"no record (autocert cache or older relay)", nil, true},
		{"record names the configured directory", nil, true}, // record filled in below
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newCacheDir(t)
			seedCache(t, dir, testDomain, pair)
			directory := newFakeDirectory(t)
			record := tc.record
			if tc.name == "record names the configured directory" {
				record = ptr(directory + "\n")
			}
			if record != nil {
				if err := os.WriteFile(filepath.Join(dir, testDomain+"+directory"), []byte(*record), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			logs := new(lockedBuffer)
			a := newTestACME(t, ACMEConfig{CacheDir: dir, DirectoryURL: directory, Log: slog.New(slog.NewJSONHandler(logs, nil))})
			if served := a.cert.Load() != nil; served != tc.served {
				t.Fatalf("served %v, want %v:\n%s", served, tc.served, logs)
			}
			ignored := strings.Contains(logs.String(), `"msg":"acme_cache_ignored"`)
			if ignored == tc.served {
				t.Errorf("acme_cache_ignored logged %v, want %v:\n%s", ignored, !tc.served, logs)
			}
			if !tc.served && (!strings.Contains(logs.String(), "issued by another ACME directory") ||
				!strings.Contains(logs.String(), staging)) {
				t.Errorf("the log does not say why:\n%s", logs)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// A cache written by an older autocert keeps its account: the key stored as
// "acme_account.key" is used when "acme_account+key" is missing, rather than
// a new account being registered.
func TestACMEReadsLegacyAccountKeyName(t *testing.T) {
	dir := newCacheDir(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "acme_account.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newTestACME(t, ACMEConfig{CacheDir: dir})
	got, entry, err := a.accountKey()
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(got.Public()) || entry != "acme_account.key" {
		t.Errorf("key from %q: a new account key was made instead of reading acme_account.key", entry)
	}
}
