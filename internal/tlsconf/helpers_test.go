package tlsconf

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/acmetest"
)

const testDomain = "relay.example.test"

// waitLimit bounds every wait in these tests; nothing should come close.
const waitLimit = 10 * time.Second

// testCA signs leaf certificates that clients verify through pool.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: "tlsconf test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// testPair is a leaf certificate with its key, in DER and PEM forms.
type testPair struct {
	leafDER []byte
	certPEM []byte // leaf followed by the CA certificate
	keyPEM  []byte // "EC PRIVATE KEY", the block type the ACME cache holds
}

// issue signs a 90-day ECDSA P-256 leaf for dnsName, long enough that an
// ACME manager holding it schedules no renewal during the test.
func (ca *testCA) issue(t *testing.T, dnsName string) testPair {
	t.Helper()
	return ca.issueValid(t, dnsName, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
}

// issueValid signs an ECDSA P-256 leaf for dnsName valid from notBefore to
// notAfter.
func (ca *testCA) issueValid(t *testing.T, dnsName string, notBefore, notAfter time.Time) testPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(t),
		Subject:      pkix.Name{CommonName: dnsName},
		DNSNames:     []string{dnsName},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	return testPair{
		leafDER: der,
		certPEM: certPEM,
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
}

func randomSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tlsServer accepts on 127.0.0.1 and runs one server-side handshake per
// connection, reporting each outcome on results. Receiving that outcome also
// orders the test after everything the handshake touched.
type tlsServer struct {
	addr    string
	results chan error
}

func startTLSServer(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: ln.Addr().String(), results: make(chan error, 64)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // listener closed by cleanup
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			tc := tls.Server(conn, cfg)
			err = tc.HandshakeContext(ctx)
			cancel()
			_ = tc.Close()
			s.results <- err
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return s
}

// handshake dials the server, completes (or fails) a client handshake and
// returns the client's view together with the server's outcome.
func (s *tlsServer) handshake(t *testing.T, cfg *tls.Config) (state tls.ConnectionState, clientErr, serverErr error) {
	t.Helper()
	d := &net.Dialer{Timeout: waitLimit}
	conn, clientErr := tls.DialWithDialer(d, "tcp", s.addr, cfg)
	if clientErr == nil {
		state = conn.ConnectionState()
		_ = conn.Close()
	}
	select {
	case serverErr = <-s.results:
	case <-time.After(waitLimit):
		t.Fatal("server handshake did not finish")
	}
	return state, clientErr, serverErr
}

func clientConfig(ca *testCA, serverName string) *tls.Config {
	return &tls.Config{
		RootCAs:    ca.pool,
		ServerName: serverName,
		NextProtos: []string{"h2", "http/1.1"},
	}
}

// x509Opts verifies a leaf of chain, issued by pb, for testDomain.
func x509Opts(t *testing.T, pb *acmetest.CA, chain [][]byte) x509.VerifyOptions {
	t.Helper()
	inter := x509.NewCertPool()
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	return x509.VerifyOptions{Roots: pb.Roots, DNSName: testDomain, Intermediates: inter}
}
