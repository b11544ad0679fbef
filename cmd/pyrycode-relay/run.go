package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/cluster"
	"github.com/pyrycode/pyrycode-relay/internal/config"
	"github.com/pyrycode/pyrycode-relay/internal/evloop"
	"github.com/pyrycode/pyrycode-relay/internal/front"
	"github.com/pyrycode/pyrycode-relay/internal/limits"
	"github.com/pyrycode/pyrycode-relay/internal/metrics"
	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/push"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
	"github.com/pyrycode/pyrycode-relay/internal/tlsconf"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // could not start or serve
	exitUsage  = 2 // bad configuration
)

// The ACME challenge listener's own connection caps (see run).
const (
	acmeMaxConnsPerIP = 16
	acmeMaxConns      = 256
)

// listening receives each listener's role and address once it is bound;
// tests use it to find ports chosen by the kernel.
type listening func(role string, addr net.Addr)

// run is the whole program: parse, validate, listen, serve until ctx ends,
// then drain. It returns the process exit status.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready listening) int {
	cfg, err := config.Parse(args, config.Env{Getenv: getenv, Euid: os.Geteuid()}, stdout)
	if errors.Is(err, config.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "pyrycode-relay: %v\n", err)
		return exitUsage
	}
	if cfg.ShowVersion {
		fmt.Fprintf(stdout, "pyrycode-relay %s\n", version)
		return exitOK
	}
	log := newLogger(cfg, stderr)
	if err := metrics.CheckListen(cfg.MetricsListen, cfg.MetricsPublic); err != nil {
		fmt.Fprintf(stderr, "pyrycode-relay: %v\n", err)
		return exitUsage
	}

	// Certificates and the cert cache are checked before anything logs, so
	// a bad path is one line on stderr like every other configuration error.
	relayRef := new(handlerRef)
	servers, certs, err := buildServers(ctx, cfg, relayRef, log)
	if err != nil {
		fmt.Fprintf(stderr, "pyrycode-relay: %v\n", err)
		return exitUsage
	}

	pusher, err := push.New(push.Config{
		FCMCredentials: cfg.FCMCredentials,
		FCMProject:     cfg.FCMProject,
		FCMBaseURL:     cfg.FCMBaseURL,
		APNsKey:        cfg.APNsKey,
		APNsKeyID:      cfg.APNsKeyID,
		APNsTeamID:     cfg.APNsTeamID,
		APNsTopic:      cfg.APNsTopic,
		APNsBaseURL:    cfg.APNsBaseURL,
		Burst:          cfg.PushBurst,
		Refill:         cfg.PushRefill,
		MaxInFlight:    cfg.PushMaxInFlight,
		Log:            log,
	})
	if err != nil { // names the variable or flag, never a secret
		fmt.Fprintf(stderr, "pyrycode-relay: %v\n", err)
		return exitUsage
	}

	// Cluster mode: join before serving, so every claim is cluster-wide
	// from the first connection on.
	var node *cluster.Node
	opts := []relay.Option{relay.WithPush(pusher)}
	mopts := metrics.Options{Log: log}
	if cfg.NATSURL != "" {
		node, err = cluster.Start(cluster.Config{
			URLs: cfg.NATSURL, Creds: cfg.NATSCreds, CA: cfg.NATSCA, Cert: cfg.NATSCert, Key: cfg.NATSKey,
			Name: cfg.ClusterName, NodeID: cfg.NodeID, Replicas: cfg.NATSReplicas, Grace: cfg.Grace, MaxFrameBytes: cfg.MaxFrameBytes, Log: log,
		})
		if err != nil { // nats errors name no credentials
			fmt.Fprintf(stderr, "pyrycode-relay: %v\n", err)
			return exitFailed
		}
		defer node.Close() // for the early returns below; idempotent
		opts = append(opts, relay.WithDirectory(node), relay.WithClusterHealth(node.Health))
		mopts.Cluster = node.Health
	}
	nodeID := ""
	if node != nil {
		nodeID = node.ID()
	}

	forward := metrics.NewForwardHistogram()
	opts = append(opts, relay.WithForwardObserver(forward.Observe))
	mopts.Forward = forward
	var loops *evloop.Group
	if cfg.IO == "loop" {
		// By default one loop per core but one (at least one): the rest
		// of the relay (handshakes on net/http's goroutines, the NATS
		// client, the collector's workers) then always finds a free P
		// instead of preempting a loop, whose every connection would wait.
		// On 2 cores with the load tool beside it this took the p99 at
		// 64 x 8 from 21.8 to 8.0 ms for the same CPU (docs/performance.md).
		// The loops live as long as the process.
		n := cfg.Loops
		if n == 0 {
			n = max(1, runtime.GOMAXPROCS(0)-1)
		}
		loops, err = evloop.NewGroup(n)
		if err != nil {
			fmt.Fprintf(stderr, "pyrycode-relay: --io loop: %v\n", err)
			return exitFailed
		}
		defer loops.Close()
		opts = append(opts, relay.WithLoops(loops))
	}
	srv := relay.New(relay.Config{
		Version:           version,
		Grace:             cfg.Grace,
		ProbeTimeout:      cfg.ProbeTimeout,
		HeartbeatInterval: cfg.HeartbeatInterval,
		HeartbeatTimeout:  cfg.HeartbeatTimeout,
		MessageTimeout:    cfg.MessageTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		MaxFrameBytes:     cfg.MaxFrameBytes,
		MaxPhones:         cfg.MaxPhones,
		PhoneQueueBytes:   cfg.PhoneQueueBytes,
		BinaryQueueBytes:  cfg.PhoneQueueBytes,
		MaxQueuedBytes:    cfg.MaxQueuedBytes,
		NodeID:            nodeID,
	}, log, opts...)
	mets := metrics.New(srv, srv.IDCounts, mopts)
	if err := mets.Register(pusher.Collectors()...); err != nil {
		fmt.Fprintf(stderr, "pyrycode-relay: metrics: %v\n", err)
		return exitFailed
	}
	if node != nil {
		if err := mets.Register(node.Collectors()...); err != nil {
			fmt.Fprintf(stderr, "pyrycode-relay: metrics: %v\n", err)
			return exitFailed
		}
	}
	if certs != nil {
		if err := mets.Register(certs.Collectors()...); err != nil {
			fmt.Fprintf(stderr, "pyrycode-relay: metrics: %v\n", err)
			return exitFailed
		}
		defer certs.Close() // for the early returns below; idempotent
	}
	lim, err := limits.New(limits.Config{
		UpgradeRate:    cfg.UpgradeRate,
		UpgradeBurst:   cfg.UpgradeBurst,
		MaxConnsPerIP:  cfg.MaxConnsPerIP,
		MaxConns:       cfg.MaxConns,
		TrustedProxies: cfg.TrustedProxies,
		ProxyProtocol:  cfg.ProxyProtocol,
	}, srv.Stats())
	if err != nil {
		fmt.Fprintf(stderr, "pyrycode-relay: %v\n", err)
		return exitUsage
	}

	// The ACME challenge listener is outside the relay's caps: at
	// --max-connections the CA's validators would get 503, and each
	// attempt would spend one of the CA's failed validations. It has small
	// caps of its own instead.
	acmeLim, err := limits.New(limits.Config{
		UpgradeRate:    cfg.UpgradeRate,
		UpgradeBurst:   cfg.UpgradeBurst,
		MaxConnsPerIP:  acmeMaxConnsPerIP,
		MaxConns:       acmeMaxConns,
		TrustedProxies: cfg.TrustedProxies,
		ProxyProtocol:  cfg.ProxyProtocol,
	}, nil)
	if err != nil {
		fmt.Fprintf(stderr, "pyrycode-relay: %v\n", err)
		return exitUsage
	}
	limiterFor := func(role string) *limits.Limiter {
		if role == "acme-http" {
			return acmeLim
		}
		return lim
	}

	relayRef.h = srv
	for _, s := range servers {
		l := limiterFor(s.role)
		s.http.Handler = l.Middleware(s.http.Handler)
		s.http.ConnContext = l.ConnContext
	}
	if cfg.MetricsListen != "" {
		servers = append(servers, server{"metrics", cfg.MetricsListen, &http.Server{
			Handler:           mets.Handler(),
			ReadHeaderTimeout: cfg.HeaderTimeout,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}})
	}
	// Bind everything before serving anything, so a taken port fails fast.
	burst := newGCBurst(log) // tighter collections during reconnect storms
	lns := make([]net.Listener, len(servers))
	for i, s := range servers {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			for _, l := range lns[:i] {
				l.Close()
			}
			fmt.Fprintf(stderr, "pyrycode-relay: listen %s: %v\n", s.role, err)
			return exitFailed
		}
		if s.role != "metrics" {
			ln = limiterFor(s.role).Listener(ln) // per-IP and global connection caps, PROXY headers
		}
		if s.role == "insecure" || s.role == "https" {
			ln = burst.listener(ln)
		}
		lns[i] = ln
	}
	mets.Start(context.Background()) // keeps sampling through the drain; Close stops it
	defer mets.Close()
	trimCtx, stopTrim := context.WithCancel(ctx)
	trimDone := make(chan struct{})
	go trimMemory(trimCtx, trimDone)
	defer func() { stopTrim(); <-trimDone }()

	errc := make(chan error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		ln := lns[i]
		log.Info("relay_listening", "role", s.role, "addr", ln.Addr().String(), "version", version)
		if ready != nil {
			ready(s.role, ln.Addr())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			// The relay's own listeners serve upgrades off net/http's
			// per-connection buffers (package front).
			relayRole := s.role == "insecure" || s.role == "https"
			switch {
			case s.http.TLSConfig != nil && loops != nil:
				// Upgraded TLS connections go on the event loops too.
				err = s.http.Serve(front.New(peer.NewTLSListener(ln, s.http.TLSConfig), s.http, relay.IsUpgrade))
			case s.http.TLSConfig != nil:
				err = s.http.ServeTLS(ln, "", "")
			case relayRole:
				err = s.http.Serve(front.New(ln, s.http, relay.IsUpgrade))
			default:
				err = s.http.Serve(ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", s.role, err)
			}
		}()
	}
	if certs != nil {
		// Only now, with the challenge listener serving, may the CA be
		// asked to validate: the first attempt starts here.
		certs.Start()
	}

	status := exitOK
	select {
	case <-ctx.Done():
		log.Info("relay_stopping", "drain_timeout", cfg.DrainTimeout.String())
	case err := <-errc:
		log.Error("relay_serve_failed", "err", err)
		status = exitFailed
	}
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if node != nil {
		// From now on this node's ids are left to the cluster's grace
		// period: their binaries can reclaim on other nodes at once.
		node.Leave()
	}
	// Stop accepting at once: Close shuts the relay's listeners and drops
	// plain HTTP connections (health checks, half-sent requests) without
	// waiting for them, so none of the drain budget is spent before every
	// WebSocket has its 1001. Upgraded connections are the relay's to
	// drain. The metrics listener stays up during the drain.
	for _, s := range servers {
		if s.role != "metrics" {
			_ = s.http.Close()
		}
	}
	// No attempt may start with the challenge listener gone, so the
	// certificate manager stops now, but alongside the drain: however long
	// abandoning an attempt takes, it must not delay any WebSocket's 1001.
	certsClosed := make(chan struct{})
	go func() {
		defer close(certsClosed)
		if certs != nil {
			if tune, ok := ctx.Value(acmeTuningKey{}).(acmeTuning); ok && tune.closing != nil {
				tune.closing()
			}
			certs.Close()
		}
	}()
	if err := srv.Shutdown(dctx); err != nil {
		log.Warn("relay_drain_incomplete", "err", err)
	}
	if node != nil {
		node.Close() // goodbye: other nodes treat this node's phones' ids as in grace
	}
	// The binaries are gone, so no new wakes; give those in flight what is
	// left of the drain budget.
	if err := pusher.Shutdown(dctx); err != nil {
		log.Warn("push_drain_incomplete", "err", err)
	}
	for _, s := range servers {
		if s.role == "metrics" {
			mctx, mcancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.http.Shutdown(mctx)
			mcancel()
		}
	}
	wg.Wait()
	<-certsClosed
	log.Info("relay_stopped")
	return status
}

type server struct {
	role string
	addr string
	http *http.Server
}

// handlerRef lets the servers be built (and their certificates checked)
// before the relay exists; it is set before anything is served.
type handlerRef struct{ h http.Handler }

func (r *handlerRef) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.h.ServeHTTP(w, req) }

// acmeTuningKey carries an acmeTuning in run's context. Only tests set it,
// to make the ACME backoff and renewal window fit in a test's time.
type acmeTuningKey struct{}

type acmeTuning struct {
	retryBase   time.Duration // first wait after a failure (default one minute)
	renewBefore time.Duration // renewal window (default a third of the lifetime)
	closing     func()        // called at shutdown just before the manager is closed
}

// buildServers returns the HTTP servers for the configured mode and, in
// --domain mode, the certificate manager (not yet started). In run, every
// server is put behind the limiter: its listener wrapper counts
// connections from accept on (so sockets still in the TLS handshake or
// header phase count toward the per-IP cap) and its middleware answers
// over-limit requests before any upgrade.
func buildServers(ctx context.Context, cfg config.Config, relaySrv http.Handler, log *slog.Logger) ([]server, *tlsconf.ACME, error) {
	mk := func(h http.Handler, tc *tls.Config) *http.Server {
		return &http.Server{
			Handler:           h, // wrapped by the limiter's middleware in run
			TLSConfig:         tc,
			ReadHeaderTimeout: cfg.HeaderTimeout,
			// Whole-request and response limits for plain HTTP (a slow
			// request body cannot hold a connection); an upgrade clears
			// both once it has hijacked the connection.
			ReadTimeout:    30 * time.Second,
			WriteTimeout:   30 * time.Second,
			IdleTimeout:    60 * time.Second,
			MaxHeaderBytes: 16 << 10,
			ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	}
	switch {
	case cfg.InsecureListen != "":
		return []server{{"insecure", cfg.InsecureListen, mk(relaySrv, nil)}}, nil, nil
	case cfg.TLSCert != "":
		fc, err := tlsconf.NewFileCert(cfg.TLSCert, cfg.TLSKey, log)
		if err != nil {
			return nil, nil, err
		}
		return []server{{"https", cfg.HTTPSListen, mk(relaySrv, tlsconf.FileTLSConfig(fc))}}, nil, nil
	default:
		dir, err := tlsconf.PrepareCacheDir(cfg.CertCache)
		if err != nil {
			return nil, nil, fmt.Errorf("--cert-cache: %w", err)
		}
		acfg := tlsconf.ACMEConfig{
			Domain:       cfg.Domain,
			CacheDir:     dir,
			Email:        cfg.ACMEEmail,
			DirectoryURL: cfg.ACMEDirectory,
			Log:          log,
		}
		if cfg.ACMECACert != "" {
			if acfg.RootCAs, err = tlsconf.LoadCertPool(cfg.ACMECACert); err != nil {
				return nil, nil, fmt.Errorf("--acme-ca-cert: %w", err)
			}
		}
		if tune, ok := ctx.Value(acmeTuningKey{}).(acmeTuning); ok {
			acfg.RetryBase, acfg.RenewBefore = tune.retryBase, tune.renewBefore
		}
		certs, err := tlsconf.NewACME(acfg)
		if err != nil {
			return nil, nil, err
		}
		return []server{
			{"acme-http", cfg.HTTPListen, mk(certs.ChallengeHandler(), nil)},
			{"https", cfg.HTTPSListen, mk(tlsconf.RequireHost(cfg.Domain, relaySrv), certs.TLSConfig())},
		}, certs, nil
	}
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
