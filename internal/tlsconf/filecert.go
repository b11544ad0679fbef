package tlsconf

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// defaultCheckInterval is how often FileCert looks at its files at most.
const defaultCheckInterval = time.Second

// FileCert serves a certificate and private key that an operator keeps in two
// PEM files, and picks up a replacement pair without a restart.
//
// Handshakes read the current pair through an atomic pointer and never wait
// for a lock. At most once per check interval (one second) a handshake also
// looks at the size and modification time of both files; when either changed
// it reloads them. A reload that fails (a half-written file, a key that does
// not match) leaves the previous pair in service and is logged once per
// distinct state of the files. All methods are safe for concurrent use.
type FileCert struct {
	certFile string
	keyFile  string
	log      *slog.Logger

	// checkInterval is the minimum time between two looks at the files.
	// Zero means every handshake looks. Tests in this package change it
	// while no handshake is running.
	checkInterval time.Duration

	// epoch anchors lastCheck on the monotonic clock, so that a jump of the
	// wall clock neither stops nor floods the checks.
	epoch time.Time
	// lastCheck is the time of the latest look at the files, in
	// nanoseconds since epoch. Only the holder of mu stores it.
	lastCheck atomic.Int64
	// current is the pair being served, never nil after NewFileCert.
	current atomic.Pointer[servedPair]

	// mu is held, through TryLock, by the one goroutine that is looking at
	// the files; handshakes that find it taken keep the current pair.
	mu sync.Mutex
	// loggedFailure is the file state whose reload failure was last
	// logged; hasLoggedFailure says whether there is one. Guarded by mu.
	loggedFailure    pairStamp
	hasLoggedFailure bool
}

// servedPair is an immutable snapshot: the parsed pair and the state its
// files were in just before they were read.
type servedPair struct {
	cert  *tls.Certificate
	stamp pairStamp
}

// fileStamp is what a cheap stat tells about a file. A file that cannot be
// stat'ed has exists == false and compares unequal to any loaded state.
type fileStamp struct {
	exists  bool
	size    int64
	modNano int64
}

type pairStamp struct {
	cert fileStamp
	key  fileStamp
}

// NewFileCert reads certFile and keyFile (PEM) and returns a FileCert that
// serves them. It fails with an error wrapping ErrCertPair when either file
// cannot be read or parsed, or when the key does not belong to the first
// certificate. log receives the reload events; nil means slog.Default().
func NewFileCert(certFile, keyFile string, log *slog.Logger) (*FileCert, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &FileCert{
		certFile:      certFile,
		keyFile:       keyFile,
		log:           log,
		checkInterval: defaultCheckInterval,
		epoch:         time.Now(),
	}
	stamp := c.stat()
	cert, err := c.load()
	if err != nil {
		return nil, err
	}
	c.current.Store(&servedPair{cert: cert, stamp: stamp})
	return c, nil
}

// GetCertificate returns the pair currently in service, first reloading it
// when the check interval has passed and the files changed. It never fails
// once NewFileCert succeeded, so it can be used as tls.Config.GetCertificate;
// the ClientHelloInfo is not consulted.
func (c *FileCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !c.checkDue() || !c.mu.TryLock() {
		return c.current.Load().cert, nil
	}
	defer c.mu.Unlock()
	// Another goroutine may have looked between checkDue and TryLock.
	if c.checkDue() {
		c.lastCheck.Store(int64(time.Since(c.epoch)))
		c.refresh()
	}
	return c.current.Load().cert, nil
}

// FileTLSConfig returns a TLS configuration for the relay's HTTPS listener
// that serves c's certificate, requires TLS 1.2 or newer and offers only
// HTTP/1.1 through ALPN. Each call returns a new *tls.Config.
func FileTLSConfig(c *FileCert) *tls.Config {
	return &tls.Config{
		GetCertificate: c.GetCertificate,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
	}
}

// checkDue reports whether the check interval has passed since the last look.
func (c *FileCert) checkDue() bool {
	return time.Since(c.epoch)-time.Duration(c.lastCheck.Load()) >= c.checkInterval
}

// refresh reloads the pair if its files changed. The caller holds mu.
func (c *FileCert) refresh() {
	stamp := c.stat()
	if stamp == c.current.Load().stamp {
		c.hasLoggedFailure = false
		return
	}
	cert, err := c.load()
	if err != nil {
		if !c.hasLoggedFailure || c.loggedFailure != stamp {
			c.loggedFailure, c.hasLoggedFailure = stamp, true
			c.log.Warn("tls_reload_failed",
				"cert_file", c.certFile, "key_file", c.keyFile, "error", err)
		}
		return
	}
	c.hasLoggedFailure = false
	c.current.Store(&servedPair{cert: cert, stamp: stamp})
	var notAfter time.Time
	if cert.Leaf != nil { // nil only under GODEBUG=x509keypairleaf=0
		notAfter = cert.Leaf.NotAfter
	}
	c.log.Info("tls_reloaded", "cert_file", c.certFile, "key_file", c.keyFile, "not_after", notAfter)
}

// stat takes the state of both files. It must run before load: a change that
// lands in between is then seen again by the next check instead of being
// recorded as already loaded.
func (c *FileCert) stat() pairStamp {
	return pairStamp{cert: statFile(c.certFile), key: statFile(c.keyFile)}
}

func statFile(name string) fileStamp {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{exists: true, size: fi.Size(), modNano: fi.ModTime().UnixNano()}
}

// load reads and parses both files. Its errors name files and causes only.
func (c *FileCert) load() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCertPair, err)
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCertPair, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %s, %s: %w", ErrCertPair, c.certFile, c.keyFile, err)
	}
	return &cert, nil
}
