package relay

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/evloop"
	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/registry"
	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

// Config holds the routing core's limits and timers. Zero fields take the
// contract's defaults (see WithDefaults).
type Config struct {
	Version           string        // reported by /healthz
	Grace             time.Duration // id kept after its binary leaves (30 s)
	ProbeTimeout      time.Duration // conflict probe's wait for a pong (10 s)
	HeartbeatInterval time.Duration // ping period (30 s)
	HeartbeatTimeout  time.Duration // pong deadline (30 s)
	MessageTimeout    time.Duration // one message must arrive within (30 s)
	WriteTimeout      time.Duration // one write must finish within (10 s)
	CloseWait         time.Duration // wait for the peer's close frame (2 s)
	MaxFrameBytes     int           // largest message read (256 KiB)
	MaxPhones         int           // phones per server-id (16)
	PhoneQueueBytes   int           // per-phone queue budget (4 MiB)
	BinaryQueueBytes  int           // per-binary queue budget before phones wait (4 MiB)
	NodeID            string        // embedded in conn_ids when several relays share ids
	// MaxQueuedBytes bounds the bytes queued for all phones together; when
	// it is exceeded the phone with the largest backlog is closed
	// ("phone backlog full"). Zero means no global bound.
	MaxQueuedBytes int64
}

// WithDefaults returns c with zero fields set to the contract's defaults.
func (c Config) WithDefaults() Config {
	dur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	num := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	dur(&c.Grace, 30*time.Second)
	dur(&c.ProbeTimeout, 10*time.Second)
	dur(&c.HeartbeatInterval, 30*time.Second)
	dur(&c.HeartbeatTimeout, 30*time.Second)
	dur(&c.MessageTimeout, 30*time.Second)
	dur(&c.WriteTimeout, 10*time.Second)
	dur(&c.CloseWait, 2*time.Second)
	num(&c.MaxFrameBytes, 256<<10)
	num(&c.MaxPhones, 16)
	num(&c.PhoneQueueBytes, 4<<20)
	num(&c.BinaryQueueBytes, 4<<20)
	return c
}

// Server is the relay's routing core. Create it with New; serve Handler;
// end it with Shutdown.
type Server struct {
	cfg     Config
	log     *slog.Logger
	dir     Directory
	ids     *connIDs
	push    PushSink
	health  func() any // extra /healthz field in cluster mode
	stats   *Stats
	started time.Time
	loops   *evloop.Group // nil: a goroutine per connection

	binOpt, phoneOpt peer.Options

	binaries, phones atomic.Int64 // live connections past their handshake
	shedding         atomic.Bool  // a goroutine is enforcing MaxQueuedBytes

	wg       sync.WaitGroup // one per connection goroutine
	mu       sync.Mutex
	conns    map[*peer.Conn]struct{} // every upgraded connection still running
	draining bool                    // Shutdown has begun: refuse new connections
}

// Option customises a Server.
type Option func(*Server)

// WithDirectory replaces the in-memory registry (for a cluster backend).
func WithDirectory(d Directory) Option { return func(s *Server) { s.dir = d } }

// WithForwardObserver receives, for every frame written, the seconds from
// its arrival to the end of its write (the histogram of the metrics).
func WithForwardObserver(f func(seconds float64)) Option {
	return func(s *Server) { s.stats.forward = f }
}

// WithLoops serves plain TCP connections on the event loops of g instead
// of a goroutine each (TLS connections keep their goroutine).
func WithLoops(g *evloop.Group) Option { return func(s *Server) { s.loops = g } }

// WithClusterHealth adds a "cluster" object, f's value, to /healthz.
func WithClusterHealth(f func() any) Option { return func(s *Server) { s.health = f } }

// clusterHealth is the "cluster" field of /healthz: nil (left out) on a
// single node.
func (s *Server) clusterHealth() any {
	if s.health == nil {
		return nil
	}
	return s.health()
}

// WithPush sets where validated push wakes go.
func WithPush(p PushSink) Option { return func(s *Server) { s.push = p } }

// New returns a Server. log may be nil.
func New(cfg Config, log *slog.Logger, opts ...Option) *Server {
	cfg = cfg.WithDefaults()
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		ids:     newConnIDs(cfg.NodeID),
		stats:   new(Stats),
		started: time.Now(),
		conns:   make(map[*peer.Conn]struct{}),
	}
	s.dir = registry.New[Binary, Phone]()
	s.push = dropPush{s.stats}
	for _, o := range opts {
		o(s)
	}
	base := peer.Options{
		MaxMessage:           cfg.MaxFrameBytes,
		HeartbeatInterval:    cfg.HeartbeatInterval,
		HeartbeatTimeout:     cfg.HeartbeatTimeout,
		MessageTimeout:       cfg.MessageTimeout,
		WriteTimeout:         cfg.WriteTimeout,
		CloseWait:            cfg.CloseWait,
		CodeAllowed:          wire.WireCloseCodeAllowed,
		ReasonProtocol:       peer.Close(wire.CloseProtocol),
		ReasonTooBig:         peer.Close(wire.CloseTooBig),
		ReasonHeartbeat:      peer.Close(wire.CloseHeartbeat),
		ReasonMessageTimeout: peer.Close(wire.CloseMessageTimeout),
		ReasonInvalidUTF8:    peer.Close(wire.CloseInvalidUTF8),
		Loops:                s.loops,
	}
	if s.stats.forward != nil {
		base.StampReads = true
		base.OnWritten = s.stats.observeForward
	}
	s.binOpt = base
	s.binOpt.QueueBytes = cfg.BinaryQueueBytes
	// A binary's reads are the fan-out's batches: the bigger they are, the
	// more frames each phone gets per write (1 binary -> 16 phones: 5.4 ->
	// 3.1 µs of relay CPU per frame from 64 KiB to 1 MiB). A binary is
	// never parked, so it never keeps the rest of a read.
	s.binOpt.ReadSize = evloop.BufSize
	s.binOpt = s.binOpt.WithDefaults()
	s.phoneOpt = base
	s.phoneOpt.QueueBytes = cfg.PhoneQueueBytes
	s.phoneOpt.QueueGauge = &s.stats.QueuedBytes
	// Room for the envelope's prefix, and in front of it for a WebSocket
	// frame header, so the envelope can go out without being copied.
	s.phoneOpt.Headroom = frameRoom + wire.SplicePrefixLen(s.ids.next())
	s.phoneOpt.Tailroom = 1
	s.phoneOpt = s.phoneOpt.WithDefaults()
	return s
}

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return s.stats }

// Counts returns the live binaries and phones.
func (s *Server) Counts() (binaries, phones int64) {
	return s.binaries.Load(), s.phones.Load()
}

// IDCounts returns how many server-ids have a live binary and how many are
// in their grace period.
func (s *Server) IDCounts() (live, grace int) { return s.dir.Counts() }

// ServeHTTP routes the relay's endpoints. Paths are matched exactly.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/server":
		s.serveBinary(w, r)
	case "/v1/client":
		s.servePhone(w, r)
	case "/healthz":
		s.serveHealth(w, r)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

type health struct {
	Status            string `json:"status"`
	Version           string `json:"version"`
	ConnectedBinaries int64  `json:"connected_binaries"`
	ConnectedPhones   int64  `json:"connected_phones"`
	UptimeSeconds     int64  `json:"uptime_seconds"`
	Cluster           any    `json:"cluster,omitempty"`
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	b, p := s.Counts()
	body, _ := json.Marshal(health{
		Status:            "ok",
		Version:           s.cfg.Version,
		ConnectedBinaries: b,
		ConnectedPhones:   p,
		UptimeSeconds:     int64(time.Since(s.started) / time.Second),
		Cluster:           s.clusterHealth(),
	})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// upgrade answers the opening handshake and starts tracking the
// connection. It returns nil, having answered and counted the request,
// when the request cannot be upgraded.
//
// On event loops the connection is served on the loop of its server-id
// (id), where its binary is too: see peer.Conn.PlaceBy.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, ep Endpoint, opt *peer.Options, id string) *peer.Conn {
	if s.isDraining() {
		s.stats.Upgrade(ep, OutcomeDraining)
		w.WriteHeader(http.StatusServiceUnavailable)
		return nil
	}
	if !peer.CheckUpgrade(r) {
		s.stats.Upgrade(ep, OutcomeNotWebSocket)
	}
	nc, pending, err := peer.Upgrade(w, r, s.cfg.WriteTimeout)
	if err != nil {
		s.log.Debug("upgrade_failed", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		return nil
	}
	c := peer.New(nc, pending, opt)
	c.PlaceBy(id)
	if !s.track(c) {
		// Upgraded just as the drain began: say so like every other
		// connection (1001 "shutting down"), then hang up.
		s.stats.Upgrade(ep, OutcomeDraining)
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = nc.Write(shuttingDownFrame)
		nc.Close()
		c.Unplace()
		return nil
	}
	return c
}

// track starts tracking c for Shutdown; it reports false when the drain has
// begun (then c must be dropped).
func (s *Server) track(c *peer.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// frameRoom is the room kept in front of a phone's envelope for the frame
// header (at most 10 bytes for a server frame).
const frameRoom = 10

// shuttingDownFrame is a server close frame: 1001 "shutting down".
var shuttingDownFrame = func() []byte {
	r := wire.CloseShuttingDown.Reason
	f := []byte{0x88, byte(2 + len(r)), byte(wire.CloseShuttingDown.Code >> 8), byte(wire.CloseShuttingDown.Code)}
	return append(f, r...)
}()

// refuse answers a request that fails the header gate: 400, empty body.
func (s *Server) refuse(w http.ResponseWriter, ep Endpoint, o Outcome) {
	s.stats.Upgrade(ep, o)
	w.WriteHeader(http.StatusBadRequest)
}

// endHandler is a connection's handler that also takes its end: it calls
// forget last. Being told through a method, not a closure, an idle
// connection keeps no closure for its end.
type endHandler interface {
	peer.Handler
	peer.Ender
}

// serve runs c with h until it ends, then calls h.Ended with how it ended.
// A connection on an event loop is started there and serve returns at once
// (Ended then runs on a goroutine of its own); otherwise it is run on the
// calling goroutine.
func (s *Server) serve(c *peer.Conn, h endHandler) {
	if c.OnLoop() {
		c.Start(h, nil)
		return
	}
	h.Ended(c.Run(h))
}

// forget stops tracking c once its goroutine is done with it.
func (s *Server) forget(c *peer.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting connections, closes every connection with 1001
// "shutting down" after what is already queued for it, and waits for them
// to finish until ctx ends; then it drops whatever is left. The caller
// should stop its HTTP listeners first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	conns := make([]*peer.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close(peer.Close(wire.CloseShuttingDown), true)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Abort(peer.Close(wire.CloseShuttingDown))
	}
	s.mu.Unlock()
	<-done // every socket is closed now, so every goroutine ends promptly
	return ctx.Err()
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// remoteIP is the peer's IP for logs.
func remoteIP(c *peer.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}
