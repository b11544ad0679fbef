package push

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxPushToken bounds a push token. FCM registration tokens are about 160
// bytes and APNs device tokens 64 hex digits; anything near this is not a
// token, and is refused without a request.
const maxPushToken = 4 << 10

type nowFunc = func() time.Time

// service is one push platform's sender.
type service interface {
	send(ctx context.Context, token string) result
}

// Sender admits push wakes and sends the admitted ones. It implements the
// relay's PushSink.
//
// All methods are safe for concurrent use. Wake never blocks; each admitted
// wake runs on a goroutine of its own, owned by the Sender and waited for
// by Shutdown.
type Sender struct {
	log         *slog.Logger
	now         nowFunc
	timeout     time.Duration
	maxInFlight int
	services    [numPlatforms]service // nil: platform off
	metrics     *metrics
	idle        []*http.Transport // transports the Sender made and closes

	// base parents every send; cancelled when Shutdown gives up waiting.
	base   context.Context
	cancel context.CancelFunc

	wg sync.WaitGroup // one per admitted wake; Add only under mu while !closed

	mu       sync.Mutex
	closed   bool    // Shutdown has begun: admit nothing more
	inFlight int     // admitted wakes not yet finished
	buckets  buckets // per server-id token buckets
}

// New validates c and returns a Sender ready to take wakes. Its error is
// the one Validate returns.
func New(c Config) (*Sender, error) {
	set, err := c.parse()
	if err != nil {
		return nil, err
	}
	s := &Sender{
		log:         c.Log,
		now:         c.Now,
		timeout:     set.timeout,
		maxInFlight: set.maxInFlight,
		metrics:     newMetrics(),
		buckets:     newBuckets(set.burst, set.refill),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.base, s.cancel = context.WithCancel(context.Background())

	transport := func(h2only bool) http.RoundTripper {
		if c.Transport != nil {
			return c.Transport
		}
		t := newTransport(h2only)
		s.idle = append(s.idle, t)
		return t
	}
	if set.fcm != nil {
		s.services[platformFCM] = newFCM(set.fcm, newClient(transport(false)), s.now)
	}
	if set.apns != nil {
		s.services[platformAPNs] = newAPNs(set.apns, newClient(transport(true)), s.now)
	}
	var project, topic, apnsURL string
	if set.fcm != nil {
		project = set.fcm.project
	}
	if set.apns != nil {
		topic, apnsURL = set.apns.topic, set.apns.baseURL
	}
	s.log.Info("push_ready", "fcm", set.fcm != nil, "apns", set.apns != nil,
		"fcm_project", project, "apns_topic", topic, "apns_url", apnsURL)
	return s, nil
}

// Collectors returns the Sender's two metric families,
// pyrycode_relay_push_wakes_total{platform,outcome} and
// pyrycode_relay_push_seconds{platform}, with every series present (at
// zero) from the start. Register them on the relay's registry.
func (s *Sender) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.metrics.wakes, s.metrics.seconds}
}

// Wake asks the platform's push service to wake the phone holding token
// on behalf of serverID. It never blocks and reports nothing: a wake is
// admitted (token bucket of serverID, then the in-flight cap) and sent in
// the background, or dropped; either way it is counted. platform is "fcm"
// or "apns"; anything else is ignored (the relay validates it first).
func (s *Sender) Wake(serverID, platform, token string) {
	p, ok := platformOf(platform)
	if !ok {
		s.log.Debug("push_wake_dropped", "server_id", serverID, "reason", "unknown_platform")
		return
	}
	svc := s.services[p]
	switch {
	case svc == nil:
		s.drop(p, outcomeOff, serverID, token)
		return
	case token == "" || len(token) > maxPushToken:
		s.drop(p, outcomeRejected, serverID, token)
		return
	}
	now := s.now()
	refused := outcome(-1)
	s.mu.Lock()
	switch {
	case s.closed, s.inFlight >= s.maxInFlight:
		refused = outcomeInFlightCap
	case !s.buckets.allow(serverID, now):
		refused = outcomeRateLimited
	default:
		s.inFlight++
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if refused >= 0 {
		s.drop(p, refused, serverID, token)
		return
	}
	go s.send(p, svc, serverID, token)
}

// drop counts a wake refused without a request.
func (s *Sender) drop(p platform, o outcome, serverID, token string) {
	s.metrics.counters[p][o].Inc()
	s.log.Debug("push_wake_dropped", "server_id", serverID, "platform", p.String(),
		"token_fp", fingerprint(token), "outcome", o.String())
}

// send runs one admitted wake to its end.
func (s *Sender) send(p platform, svc service, serverID, token string) {
	defer s.finish()
	ctx, cancel := context.WithTimeout(s.base, s.timeout)
	defer cancel()
	start := time.Now()
	r := svc.send(ctx, token)
	elapsed := time.Since(start)

	s.metrics.observe[p].Observe(elapsed.Seconds())
	s.metrics.counters[p][r.outcome].Inc()

	attrs := make([]slog.Attr, 0, 9)
	attrs = append(attrs,
		slog.String("server_id", serverID),
		slog.String("platform", p.String()),
		slog.String("token_fp", fingerprint(token)),
		slog.String("outcome", r.outcome.String()),
		slog.Int64("ms", elapsed.Milliseconds()),
	)
	if r.outcome != outcomeSent {
		attrs = append(attrs, slog.String("stage", r.stage))
	}
	if r.status != 0 {
		attrs = append(attrs, slog.Int("status", r.status))
	}
	if r.reason != "" {
		attrs = append(attrs, slog.String("reason", r.reason))
	}
	if r.cause != "" {
		attrs = append(attrs, slog.String("cause", r.cause))
	}
	level := slog.LevelWarn
	switch r.outcome {
	case outcomeSent:
		level = slog.LevelDebug
	case outcomeUnregistered:
		level = slog.LevelInfo
	}
	s.log.LogAttrs(context.Background(), level, "push_wake", attrs...)
}

func (s *Sender) finish() {
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops admitting wakes (later ones are counted as
// "in_flight_cap") and waits for the wakes in flight to finish. If ctx
// ends first, the remaining sends are cancelled (and counted as "failed"
// as they return) and Shutdown returns ctx's error without waiting for
// them. It may be called more than once.
func (s *Sender) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { // ends once the last send has returned
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		n := s.inFlight
		s.mu.Unlock()
		s.log.Warn("push_shutdown_cancelled", "in_flight", n)
	}
	s.cancel()
	for _, t := range s.idle {
		t.CloseIdleConnections()
	}
	return err
}
