// Package metrics exposes the relay's counters to operators: Prometheus
// series on /metrics, and a small live status page (/ and /status.json),
// all served on a listener of their own that is meant to stay on loopback.
//
// Nothing here touches the relay's hot path. The relay only adds to the
// atomics in relay.Stats; a collector reads them when /metrics is scraped,
// and a sampler reads them once a second for the status page. Every label
// value is fixed in this package, never taken from client input.
package metrics

import (
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

// Source is what the metrics read from the relay. *relay.Server implements
// it.
type Source interface {
	Stats() *relay.Stats
	Counts() (binaries, phones int64)
}

// IDCounts reports how many server-ids are held by a connected binary
// (live) and how many are kept for a binary that left (grace). The
// relay's Directory has this method (registry.Registry.Counts).
type IDCounts func() (live, grace int)

// Options tune a Metrics. Zero fields take the defaults.
type Options struct {
	// Forward is the histogram whose Observe is given to
	// relay.WithForwardObserver. Nil creates one that stays empty.
	Forward prometheus.Histogram
	// Interval is how often the status page's history is sampled (1 s).
	Interval time.Duration
	// History is how many samples are kept (600, ten minutes at 1 s).
	History int
	// Now is the clock (time.Now); tests replace it.
	Now func() time.Time
	// Log receives collection errors from /metrics (nil: not logged).
	Log *slog.Logger
	// Cluster, in cluster mode, returns the node id and NATS state shown on
	// the status page and in /status.json.
	Cluster func() any
}

// Metrics owns a private Prometheus registry with the relay's series, the
// Go runtime and process collectors, and the status page's history.
type Metrics struct {
	reg     *prometheus.Registry
	src     Source
	ids     IDCounts
	now     func() time.Time
	started time.Time
	every   time.Duration
	log     *slog.Logger

	clusterInfo func() any // nil on a single node

	mu      sync.Mutex
	ring    []sample // fixed capacity, oldest overwritten
	next    int      // where the next sample goes
	filled  bool     // ring has wrapped at least once
	last    totals   // totals at the latest sample
	hasLast bool

	running bool          // Start has launched the sampler
	closed  bool          // Close has been called
	stop    chan struct{} // closed by Close
	done    chan struct{} // closed when the sampler ends
}

// ForwardBuckets are the upper bounds, in seconds, of the forward-time
// histogram: 10 µs to 10 s in 1-2.5-5 steps.
var ForwardBuckets = []float64{
	10e-6, 25e-6, 50e-6,
	100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3,
	10e-3, 25e-3, 50e-3,
	0.1, 0.25, 0.5,
	1, 2.5, 5,
	10,
}

// NewForwardHistogram returns the pyrycode_relay_forward_seconds
// histogram. Create it before the relay, pass its Observe to
// relay.WithForwardObserver, and give it to New in Options.Forward.
func NewForwardHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pyrycode_relay_forward_seconds",
		Help:    "Time from a frame being read off one connection to the end of its write to the other, in seconds.",
		Buckets: ForwardBuckets,
	})
}

// New returns a Metrics reading src and ids (nil ids reports zero ids).
// Call Start to sample the status page's history and Close to stop it.
func New(src Source, ids IDCounts, opt Options) *Metrics {
	if ids == nil {
		ids = func() (int, int) { return 0, 0 }
	}
	if opt.Forward == nil {
		opt.Forward = NewForwardHistogram()
	}
	if opt.Interval <= 0 {
		opt.Interval = time.Second
	}
	if opt.History <= 0 {
		opt.History = 600
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	m := &Metrics{
		reg:   prometheus.NewRegistry(),
		src:   src,
		ids:   ids,
		now:   opt.Now,
		every: opt.Interval,
		log:   opt.Log,

		clusterInfo: opt.Cluster,
		ring:        make([]sample, opt.History),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	m.started = m.now()
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newRelayCollector(src, ids),
		opt.Forward,
	)
	return m
}

// Register adds collectors (for example the push sender's) to the private
// registry.
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Registry returns the private registry, for tests and extra handlers.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Metric descriptions. Help strings are what an operator reads in the
// scrape output, so they say what is counted.
var (
	descConnections = prometheus.NewDesc("pyrycode_relay_connections",
		"Connections currently registered with the relay, by role (binary: pyry daemons; phone: app connections).",
		[]string{"role"}, nil)
	descServerIDs = prometheus.NewDesc("pyrycode_relay_server_ids",
		"Server-ids currently held: live by a connected binary, grace when kept for a binary that disconnected.",
		[]string{"state"}, nil)
	descUpgrades = prometheus.NewDesc("pyrycode_relay_upgrades_total",
		"WebSocket upgrade requests by endpoint (server: /v1/server, client: /v1/client) and how they ended.",
		[]string{"endpoint", "outcome"}, nil)
	descFrames = prometheus.NewDesc("pyrycode_relay_frames_total",
		"Frames forwarded, by direction.",
		[]string{"direction"}, nil)
	descBytes = prometheus.NewDesc("pyrycode_relay_bytes_total",
		"Bytes of forwarded frames (without the routing envelope), by direction.",
		[]string{"direction"}, nil)
	descDropped = prometheus.NewDesc("pyrycode_relay_dropped_total",
		"Messages dropped, phones closed for flow control, and close directives rewritten, by reason.",
		[]string{"reason"}, nil)
	descCloses = prometheus.NewDesc("pyrycode_relay_closes_total",
		"Connections ended, by role and WebSocket close code (other: any code not listed).",
		[]string{"role", "code"}, nil)
	descGrace = prometheus.NewDesc("pyrycode_relay_grace_total",
		"Grace-period outcomes: reclaimed by the returning binary, expired, or taken over from a binary that failed the conflict probe.",
		[]string{"outcome"}, nil)
	descQueued = prometheus.NewDesc("pyrycode_relay_queued_bytes",
		"Bytes waiting in all phone send queues.",
		nil, nil)
)

// dropReasons maps each reason label to its counter.
var dropReasons = []struct {
	name string
	get  func(*relay.Stats) int64
}{
	{"malformed_envelope", func(s *relay.Stats) int64 { return s.DroppedMalformed.Load() }},
	{"unknown_conn_id", func(s *relay.Stats) int64 { return s.DroppedUnknownConn.Load() }},
	{"binary_opcode", func(s *relay.Stats) int64 { return s.DroppedBinaryOp.Load() }},
	{"backlog_full", func(s *relay.Stats) int64 { return s.BacklogCloses.Load() }},
	{"queue_budget", func(s *relay.Stats) int64 { return s.BudgetCloses.Load() }},
	{"push_malformed", func(s *relay.Stats) int64 { return s.PushMalformed.Load() }},
	{"push_off", func(s *relay.Stats) int64 { return s.PushDropped.Load() }},
	{"close_code_replaced", func(s *relay.Stats) int64 { return s.CloseCodeReplaced.Load() }},
}

// droppedTotal is the sum over every drop reason.
func droppedTotal(s *relay.Stats) int64 {
	var n int64
	for _, r := range dropReasons {
		n += r.get(s)
	}
	return n
}

// closeCodeLabels are the code label values, in relay.Stats.Closes order.
var closeCodeLabels = func() []string {
	out := make([]string, 0, len(relay.CloseCodes)+1)
	for _, c := range relay.CloseCodes {
		out = append(out, strconv.Itoa(c))
	}
	return append(out, "other")
}()

var (
	roles     = []relay.Role{relay.RoleBinary, relay.RolePhone}
	endpoints = []relay.Endpoint{relay.EndpointServer, relay.EndpointClient}
)

// relayCollector turns the relay's atomics into constant metrics at
// scrape time. It emits every label combination, so each series exists
// from start-up at zero.
type relayCollector struct {
	src Source
	ids IDCounts
}

func newRelayCollector(src Source, ids IDCounts) *relayCollector {
	return &relayCollector{src: src, ids: ids}
}

func (c *relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descServerIDs, descUpgrades, descFrames,
		descBytes, descDropped, descCloses, descGrace, descQueued} {
		ch <- d
	}
}

func (c *relayCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	bins, phones := c.src.Counts()
	gauge(descConnections, bins, "binary")
	gauge(descConnections, phones, "phone")

	live, grace := c.ids()
	gauge(descServerIDs, int64(live), "live")
	gauge(descServerIDs, int64(grace), "grace")

	for _, e := range endpoints {
		for _, o := range relay.Outcomes() {
			counter(descUpgrades, st.Upgrades(e, o), e.String(), o.String())
		}
	}

	counter(descFrames, st.FramesToBinary.Load(), "phone_to_binary")
	counter(descFrames, st.FramesToPhone.Load(), "binary_to_phone")
	counter(descBytes, st.BytesToBinary.Load(), "phone_to_binary")
	counter(descBytes, st.BytesToPhone.Load(), "binary_to_phone")

	for _, r := range dropReasons {
		counter(descDropped, r.get(st), r.name)
	}

	for _, r := range roles {
		for i, code := range closeCodeLabels {
			counter(descCloses, st.Closes(r, i), r.String(), code)
		}
	}

	counter(descGrace, st.GraceReclaimed.Load(), "reclaimed")
	counter(descGrace, st.GraceExpired.Load(), "expired")
	counter(descGrace, st.Takeovers.Load(), "takeover")

	gauge(descQueued, st.QueuedBytes.Load())
}
