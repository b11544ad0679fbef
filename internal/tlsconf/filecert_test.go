package tlsconf

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects log output written from the server goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// writePair writes both files and sets both modification times to mtime,
// so that a change is visible even when the new files have the old sizes.
func writePair(t *testing.T, certFile, keyFile string, certPEM, keyPEM []byte, mtime time.Time) {
	t.Helper()
	for _, f := range []struct {
		name string
		data []byte
	}{{certFile, certPEM}, {keyFile, keyPEM}} {
		if err := os.WriteFile(f.name, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f.name, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFileCertReload(t *testing.T) {
	ca := newTestCA(t)
	a, b := ca.issue(t, testDomain), ca.issue(t, testDomain)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	t0 := time.Now().Truncate(time.Second).Add(-10 * time.Hour)
	writePair(t, certFile, keyFile, a.certPEM, a.keyPEM, t0)

	logs := &lockedBuffer{}
	fc, err := NewFileCert(certFile, keyFile, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	fc.checkInterval = time.Hour
	srv := startTLSServer(t, FileTLSConfig(fc))

	expect := func(t *testing.T, want testPair, what string) {
		t.Helper()
		state, cerr, serr := srv.handshake(t, clientConfig(ca, testDomain))
		if cerr != nil || serr != nil {
			t.Fatalf("handshake failed: client %v, server %v", cerr, serr)
		}
		if !bytes.Equal(state.PeerCertificates[0].Raw, want.leafDER) {
			t.Fatalf("server did not present %s", what)
		}
		if state.Version < tls.VersionTLS12 || state.NegotiatedProtocol != "http/1.1" {
			t.Errorf("version %x, ALPN %q; want >= TLS 1.2 and http/1.1", state.Version, state.NegotiatedProtocol)
		}
	}

	expect(t, a, "pair A")

	writePair(t, certFile, keyFile, b.certPEM, b.keyPEM, t0.Add(time.Hour))
	expect(t, a, "pair A while the check interval has not passed")

	fc.checkInterval = 0
	expect(t, b, "pair B after the files changed")
	if !strings.Contains(logs.String(), "tls_reloaded") {
		t.Errorf("no tls_reloaded event in logs:\n%s", logs)
	}

	// A broken key keeps B in service and is reported once, not on every check.
	writePair(t, certFile, keyFile, b.certPEM, []byte("not a key\n"), t0.Add(2*time.Hour))
	expect(t, b, "pair B after the key file was broken")
	expect(t, b, "pair B on the next handshake")
	out := logs.String()
	if n := strings.Count(out, "tls_reload_failed"); n != 1 {
		t.Errorf("tls_reload_failed logged %d times, want 1:\n%s", n, out)
	}
	for _, secret := range []string{"PRIVATE KEY", string(a.keyPEM[40:80]), string(b.keyPEM[40:80])} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain key material %q:\n%s", secret, out)
		}
	}

	// A mismatched pair is refused the same way.
	writePair(t, certFile, keyFile, a.certPEM, b.keyPEM, t0.Add(3*time.Hour))
	expect(t, b, "pair B when the new key does not match the new certificate")
	if n := strings.Count(logs.String(), "tls_reload_failed"); n != 2 {
		t.Errorf("tls_reload_failed logged %d times, want 2", n)
	}

	writePair(t, certFile, keyFile, a.certPEM, a.keyPEM, t0.Add(4*time.Hour))
	expect(t, a, "pair A once valid files are back")

	t.Run("refuses TLS 1.1", func(t *testing.T) {
		cfg := clientConfig(ca, testDomain)
		cfg.MinVersion = tls.VersionTLS10
		cfg.MaxVersion = tls.VersionTLS11
		if _, cerr, serr := srv.handshake(t, cfg); cerr == nil || serr == nil {
			t.Fatalf("TLS 1.1 handshake: client %v, server %v, want both to fail", cerr, serr)
		}
	})
}

func TestFileCertSurvivesMissingFiles(t *testing.T) {
	ca := newTestCA(t)
	a := ca.issue(t, testDomain)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, certFile, keyFile, a.certPEM, a.keyPEM, time.Now().Add(-time.Hour))
	fc, err := NewFileCert(certFile, keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	fc.checkInterval = 0
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	got, err := fc.GetCertificate(nil)
	if err != nil || got == nil || !bytes.Equal(got.Certificate[0], a.leafDER) {
		t.Fatalf("GetCertificate = %v, %v; want pair A", got, err)
	}
}

func TestFileCertConcurrentReload(t *testing.T) {
	ca := newTestCA(t)
	pairs := []testPair{ca.issue(t, testDomain), ca.issue(t, testDomain)}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	t0 := time.Now().Truncate(time.Second).Add(-100 * time.Hour)
	writePair(t, certFile, keyFile, pairs[0].certPEM, pairs[0].keyPEM, t0)
	fc, err := NewFileCert(certFile, keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	fc.checkInterval = 0

	known := func(c *tls.Certificate) bool {
		return c != nil && slices.ContainsFunc(pairs, func(p testPair) bool {
			return bytes.Equal(c.Certificate[0], p.leafDER)
		})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := fc.GetCertificate(nil)
				if err != nil || !known(c) {
					t.Errorf("GetCertificate = %v, %v during reloads", c, err)
					return
				}
			}
		})
	}
	const rewrites = 20
	for i := 1; i <= rewrites; i++ {
		p := pairs[i%2]
		writePair(t, certFile, keyFile, p.certPEM, p.keyPEM, t0.Add(time.Duration(i)*time.Minute))
	}
	close(stop)
	wg.Wait()

	c, err := fc.GetCertificate(nil)
	if err != nil || !bytes.Equal(c.Certificate[0], pairs[rewrites%2].leafDER) {
		t.Fatalf("after the last rewrite GetCertificate = %v, %v; want the last pair", c, err)
	}
}

func TestNewFileCertErrors(t *testing.T) {
	ca := newTestCA(t)
	a, b := ca.issue(t, testDomain), ca.issue(t, testDomain)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	certA, keyA, keyB := write("a.crt", a.certPEM), write("a.key", a.keyPEM), write("b.key", b.keyPEM)
	garbage := write("garbage", []byte("-----BEGIN NOTHING-----\n"))
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name              string
		certFile, keyFile string
		notExist          bool
	}{
		{"mismatched pair", certA, keyB, false},
		{"missing certificate", missing, keyA, true},
		{"missing key", certA, missing, true},
		{"garbage certificate", garbage, keyA, false},
		{"garbage key", certA, garbage, false},
		{"files swapped", keyA, certA, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, err := NewFileCert(tc.certFile, tc.keyFile, nil)
			if !errors.Is(err, ErrCertPair) || fc != nil {
				t.Fatalf("NewFileCert = %v, %v; want nil, ErrCertPair", fc, err)
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tc.notExist {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v, want %v (err: %v)", got, tc.notExist, err)
			}
			if strings.Contains(err.Error(), string(a.keyPEM[40:80])) || strings.Contains(err.Error(), string(b.keyPEM[40:80])) {
				t.Errorf("error carries key material: %v", err)
			}
		})
	}

	t.Run("nil logger means slog.Default", func(t *testing.T) {
		fc, err := NewFileCert(certA, keyA, nil)
		if err != nil {
			t.Fatal(err)
		}
		if fc.log != slog.Default() {
			t.Error("logger is not slog.Default()")
		}
	})
}

func TestFileTLSConfig(t *testing.T) {
	ca := newTestCA(t)
	a := ca.issue(t, testDomain)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, certFile, keyFile, a.certPEM, a.keyPEM, time.Now())
	fc, err := NewFileCert(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := FileTLSConfig(fc)
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	if !slices.Equal(cfg.NextProtos, []string{"http/1.1"}) {
		t.Errorf("NextProtos = %q, want [http/1.1]", cfg.NextProtos)
	}
	if cfg.GetCertificate == nil || cfg.Certificates != nil {
		t.Error("config must serve through GetCertificate only")
	}
}
