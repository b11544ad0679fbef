// Package acmetest runs pebble, Let's Encrypt's test ACME CA, inside the
// test process on 127.0.0.1, so tests can have real certificates issued
// through real http-01 validation without any network beyond loopback.
//
// A CA started here has:
//
//   - an HTTPS API whose certificate the test makes (APICertFile and
//     APIRoots, for the client under test to trust; the system trust store
//     is never touched);
//   - a DNS responder that pebble's validation authority uses as its
//     resolver: it answers the test domain with 127.0.0.1, or NXDOMAIN
//     while SetResolving(false);
//   - a TCP forwarder on the port where the validation authority sends its
//     http-01 requests, passing them to the address given to SetHTTPTarget
//     (the relay's challenge listener, whose port is only known once it
//     has started);
//   - a count of the orders it created (Orders).
//
// Only tests import this package.
package acmetest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/pyrycode/pyrycode-relay/internal/testcert"
)

// LeakedFunction is the one goroutine a pebble instance leaves behind (its
// validation authority's task loop, which has no way to stop). Packages
// that check for leaked goroutines ignore it.
const LeakedFunction = "github.com/letsencrypt/pebble/v2/va.VAImpl.processTasks"

// Options configure Start.
type Options struct {
	// Domain is the name the DNS responder resolves to 127.0.0.1.
	Domain string
	// Validity is the lifetime of issued certificates, in whole seconds;
	// zero means pebble's default of 90 days.
	Validity time.Duration
}

// CA is a running pebble instance. Its methods are safe for concurrent use.
type CA struct {
	// DirectoryURL is the ACME directory.
	DirectoryURL string
	// APICertFile is a PEM file with the API's certificate, which is its
	// own issuer: the file to trust for DirectoryURL.
	APICertFile string
	// APIRoots is a pool holding the same certificate.
	APIRoots *x509.CertPool
	// Roots is a pool holding pebble's root, which verifies the
	// certificates it issues.
	Roots *x509.CertPool

	orders    atomic.Int64
	resolving atomic.Bool
	target    atomic.Pointer[string]
	log       *lockedBuffer
}

var pebbleEnv sync.Once

// Start runs a pebble instance until the test ends. Issuance is fast and
// deterministic: the first time it runs, Start sets PEBBLE_VA_NOSLEEP=1
// (no random validation delays), PEBBLE_WFE_NONCEREJECT=0 (no simulated
// bad nonces) and PEBBLE_AUTHZREUSE=0 (every order is validated anew) in
// the process environment, which pebble reads when it is built.
func Start(t testing.TB, opt Options) *CA {
	t.Helper()
	pebbleEnv.Do(func() {
		for k, v := range map[string]string{
			"PEBBLE_VA_NOSLEEP":      "1",
			"PEBBLE_WFE_NONCEREJECT": "0",
			"PEBBLE_AUTHZREUSE":      "0",
		} {
			if err := os.Setenv(k, v); err != nil {
				t.Fatal(err)
			}
		}
	})
	c := &CA{log: new(lockedBuffer)}
	c.resolving.Store(true)
	logger := log.New(c.log, "pebble ", log.Lmicroseconds)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log:\n%s", c.log.String())
		}
	})

	dnsAddr := c.startDNS(t, opt.Domain)
	httpPort := c.startForwarder(t)

	store := db.NewMemoryStore()
	validity := uint64(opt.Validity / time.Second)
	authority := ca.New(logger, store, "", 0, 1, map[string]ca.Profile{
		"default": {Description: "acmetest", ValidityPeriod: validity},
	})
	// tls-alpn-01 is not used by the relay; its port gets the forwarder too.
	validator := va.New(logger, httpPort, httpPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, false, false, 0, 0)
	api := front.Handler()

	newOrderPath := discoverNewOrderPath(t, api)
	counting := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		api.ServeHTTP(rec, r)
		if r.Method == http.MethodPost && r.URL.Path == newOrderPath && rec.status == http.StatusCreated {
			c.orders.Add(1)
		}
	})

	apiCert := testcert.New(t, "127.0.0.1")
	apiPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: apiCert.Certificate[0]})
	srv := httptest.NewUnstartedServer(counting)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{apiCert}, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	c.DirectoryURL = srv.URL + wfe.DirectoryPath
	c.APICertFile = filepath.Join(t.TempDir(), "acme-api.pem")
	if err := os.WriteFile(c.APICertFile, apiPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	c.APIRoots = x509.NewCertPool()
	c.APIRoots.AppendCertsFromPEM(apiPEM)
	c.Roots = x509.NewCertPool()
	c.Roots.AddCert(authority.GetRootCert(0).Cert)
	return c
}

// Orders is how many orders the CA has created.
func (c *CA) Orders() int64 { return c.orders.Load() }

// SetResolving makes the DNS responder answer the domain with 127.0.0.1
// (true, the default) or with NXDOMAIN (false), so validations fail.
func (c *CA) SetResolving(ok bool) { c.resolving.Store(ok) }

// SetHTTPTarget sends the validation authority's http-01 requests to addr
// (host:port). Until it is called they are refused.
func (c *CA) SetHTTPTarget(addr string) { c.target.Store(&addr) }

// Log returns what pebble has logged so far.
func (c *CA) Log() string { return c.log.String() }

// startDNS runs the validation authority's resolver and returns its
// address.
func (c *CA) startDNS(t testing.TB, domain string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := dns.Fqdn(strings.ToLower(domain))
	started := make(chan struct{})
	srv := &dns.Server{
		PacketConn:        pc,
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			q := r.Question
			switch {
			case len(q) != 1 || strings.ToLower(q[0].Name) != name || !c.resolving.Load():
				m.Rcode = dns.RcodeNameError
			case q[0].Qtype == dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
			_ = w.WriteMsg(m)
		}),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.ActivateAndServe()
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("DNS responder did not start")
	}
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-served
	})
	return pc.LocalAddr().String()
}

// startForwarder listens where the validation authority sends http-01
// requests and returns the port.
func (c *CA) startForwarder(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	track := func(cs ...net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			return false // closing
		}
		for _, cn := range cs {
			conns[cn] = struct{}{}
		}
		return true
	}
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			target := c.target.Load()
			if target == nil {
				_ = in.Close()
				continue
			}
			out, err := net.DialTimeout("tcp", *target, 10*time.Second)
			if err != nil {
				_ = in.Close()
				continue
			}
			if !track(in, out) {
				_ = in.Close()
				_ = out.Close()
				return
			}
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				_ = dst.Close()
				_ = src.Close()
			}
			wg.Go(func() { pipe(out, in) })
			wg.Go(func() { pipe(in, out) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for cn := range conns {
			_ = cn.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// discoverNewOrderPath reads the directory to learn where orders are
// created.
func discoverNewOrderPath(t testing.TB, api http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "https://127.0.0.1"+wfe.DirectoryPath, nil))
	var dir struct {
		NewOrder string `json:"newOrder"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &dir); err != nil || dir.NewOrder == "" {
		t.Fatalf("pebble directory: %v %q", err, rec.Body.String())
	}
	u, err := url.Parse(dir.NewOrder)
	if err != nil {
		t.Fatal(err)
	}
	return u.Path
}

// statusRecorder remembers the status an http.Handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// lockedBuffer collects pebble's log from its goroutines.
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
