package push

import "github.com/prometheus/client_golang/prometheus"

// platform indexes the two push services.
type platform int

const (
	platformFCM platform = iota
	platformAPNs
	numPlatforms
)

var platformNames = [numPlatforms]string{"fcm", "apns"}

func (p platform) String() string { return platformNames[p] }

func platformOf(name string) (platform, bool) {
	switch name {
	case "fcm":
		return platformFCM, true
	case "apns":
		return platformAPNs, true
	}
	return 0, false
}

// outcome is what became of one wake.
type outcome int

const (
	outcomeSent         outcome = iota // 2xx
	outcomeUnregistered                // the token is dead: the daemon should forget it
	outcomeRejected                    // other 4xx: auth, quota, bad request
	outcomeFailed                      // 5xx, timeout, network error, unexpected response
	outcomeRateLimited                 // refused by the server-id's token bucket
	outcomeInFlightCap                 // refused by the in-flight cap (or after Shutdown)
	outcomeOff                         // the platform has no credentials configured
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"sent", "unregistered", "rejected", "failed", "rate_limited", "in_flight_cap", "off"}

func (o outcome) String() string { return outcomeNames[o] }

// Metric names.
const (
	metricWakes   = "pyrycode_relay_push_wakes_total"
	metricSeconds = "pyrycode_relay_push_seconds"
)

// metrics holds the two families with every series created up front, so a
// scrape shows zeros from start-up and the hot path does no label lookups.
type metrics struct {
	wakes    *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	counters [numPlatforms][numOutcomes]prometheus.Counter
	observe  [numPlatforms]prometheus.Observer
}

func newMetrics() *metrics {
	m := &metrics{
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricWakes,
			Help: "Push wakes requested by binaries, by platform and outcome.",
		}, []string{"platform", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricSeconds,
			Help:    "Time one push send took (access-token fetch included), by platform.",
			Buckets: prometheus.DefBuckets,
		}, []string{"platform"}),
	}
	for p := range numPlatforms {
		for o := range numOutcomes {
			m.counters[p][o] = m.wakes.WithLabelValues(p.String(), o.String())
		}
		m.observe[p] = m.seconds.WithLabelValues(p.String())
	}
	return m
}
