package relay

import (
	"net/http"
	"sync/atomic"

	"github.com/pyrycode/pyrycode-relay/internal/peer"
)

// Stats counts what the relay did. Every field is safe for concurrent use.
// The hot path only adds to atomics; the metrics exporter reads them at
// scrape time, so no label value ever comes from client input.
type Stats struct {
	FramesToBinary atomic.Int64 // phone frames forwarded to a binary
	FramesToPhone  atomic.Int64 // binary frames queued for a phone
	BytesToBinary  atomic.Int64 // bytes of those phone frames
	BytesToPhone   atomic.Int64 // bytes of those binary frames

	DroppedMalformed   atomic.Int64 // binary envelopes that were not valid envelopes
	DroppedUnknownConn atomic.Int64 // envelopes for a conn_id the binary may not address
	DroppedBinaryOp    atomic.Int64 // binary-opcode messages from a binary
	CloseCodeReplaced  atomic.Int64 // close directives whose code was replaced by 1011
	BacklogCloses      atomic.Int64 // phones closed because their queue overflowed
	BudgetCloses       atomic.Int64 // phones closed because all queues together were over budget

	PushRequested atomic.Int64 // valid push wakes handed to the PushSink
	PushMalformed atomic.Int64 // push_wake requests with a bad platform or token
	PushDropped   atomic.Int64 // wakes dropped because no push sender is configured

	GraceReclaimed atomic.Int64 // ids reclaimed during their grace period, or from a binary whose connection was closing
	GraceExpired   atomic.Int64 // ids released when the grace period ran out
	Takeovers      atomic.Int64 // ids taken from a binary that failed the conflict probe

	QueuedBytes atomic.Int64 // bytes waiting in all phone queues

	upgrades [2][numOutcomes]atomic.Int64
	closes   [2][len(CloseCodes) + 1]atomic.Int64

	// forward, when set, observes the time from a frame's arrival to the
	// end of its write, in seconds.
	forward func(seconds float64)
}

// Endpoint is one of the relay's two WebSocket endpoints.
type Endpoint int

// Endpoints.
const (
	EndpointServer Endpoint = iota // /v1/server
	EndpointClient                 // /v1/client
)

func (e Endpoint) String() string { return [...]string{"server", "client"}[e] }

// EndpointOf maps a request path to its endpoint.
func EndpointOf(path string) (Endpoint, bool) {
	switch path {
	case "/v1/server":
		return EndpointServer, true
	case "/v1/client":
		return EndpointClient, true
	}
	return 0, false
}

// IsUpgrade reports whether r is a WebSocket opening handshake for one of
// the relay's endpoints: the requests front.Listener serves itself.
func IsUpgrade(r *http.Request) bool {
	_, ok := EndpointOf(r.URL.Path)
	return ok && peer.CheckUpgrade(r)
}

// Outcome is how an upgrade request ended.
type Outcome int

// Upgrade outcomes. Those after OutcomeAccepted are refusals.
const (
	OutcomeAccepted      Outcome = iota // upgraded and registered
	OutcomeBadHeaders                   // 400: a required header missing or empty
	OutcomeBadID                        // 400: server-id fails the pattern
	OutcomeNotWebSocket                 // 400: not a valid WebSocket handshake
	OutcomeNoServer                     // 4404 after upgrade
	OutcomeConflict                     // 4409 after upgrade
	OutcomeTooManyPhones                // 4429 after upgrade
	OutcomeDraining                     // 503: shutting down
	OutcomeRateLimited                  // 429: per-IP upgrade rate
	OutcomeIPConnCap                    // 429: per-IP connection cap
	OutcomeConnCap                      // 503: relay-wide connection cap
	OutcomeUnavailable                  // 1013 after upgrade: a cluster node cannot check the claim
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"accepted", "bad_headers", "bad_id", "not_websocket", "no_server",
	"conflict", "too_many_phones", "draining", "rate_limited", "ip_connection_cap", "connection_cap", "unavailable"}

func (o Outcome) String() string { return outcomeNames[o] }

// Outcomes lists every outcome, for exporters that pre-create series.
func Outcomes() []Outcome {
	out := make([]Outcome, numOutcomes)
	for i := range out {
		out[i] = Outcome(i)
	}
	return out
}

// Upgrade counts an upgrade request's outcome.
func (s *Stats) Upgrade(e Endpoint, o Outcome) { s.upgrades[e][o].Add(1) }

// Upgrades returns the count for one endpoint and outcome.
func (s *Stats) Upgrades(e Endpoint, o Outcome) int64 { return s.upgrades[e][o].Load() }

// Role is which side of the relay a connection is.
type Role int

// Roles.
const (
	RoleBinary Role = iota
	RolePhone
)

func (r Role) String() string { return [...]string{"binary", "phone"}[r] }

// CloseCodes are the close codes counted by name; any other is "other".
var CloseCodes = [...]int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013, 4404, 4409, 4429}

func (s *Stats) closed(r Role, code int) {
	i := len(CloseCodes)
	for k, c := range CloseCodes {
		if c == code {
			i = k
			break
		}
	}
	s.closes[r][i].Add(1)
}

// Closes returns how many connections of role ended with CloseCodes[i]
// (i == len(CloseCodes) means any other code).
func (s *Stats) Closes(r Role, i int) int64 { return s.closes[r][i].Load() }

// observeForward records one frame's time through the relay: read at
// readAt, written at now (unix nanoseconds).
func (s *Stats) observeForward(readAt, now int64) {
	if s.forward != nil && readAt != 0 {
		s.forward(float64(now-readAt) / 1e9)
	}
}
