package metrics

import (
	"context"
	_ "embed"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// sample is one point of the status page's history.
type sample struct {
	T        int64   `json:"t"` // unix seconds
	Binaries int64   `json:"binaries"`
	Phones   int64   `json:"phones"`
	LiveIDs  int64   `json:"live_ids"`
	GraceIDs int64   `json:"grace_ids"`
	FPS      float64 `json:"frames_per_second"`
	DPS      float64 `json:"drops_per_second"`
}

// totals are the cumulative counters a rate is taken from.
type totals struct {
	at            time.Time
	frames, drops int64
}

// status is the body of /status.json.
type status struct {
	Binaries       int64    `json:"binaries"`
	Phones         int64    `json:"phones"`
	LiveIDs        int64    `json:"live_ids"`
	GraceIDs       int64    `json:"grace_ids"`
	FPS            float64  `json:"frames_per_second"`
	DPS            float64  `json:"drops_per_second"`
	UptimeSeconds  int64    `json:"uptime_seconds"`
	HistorySeconds int64    `json:"history_seconds"` // span the history can cover
	History        []sample `json:"history"`         // oldest first
	Cluster        any      `json:"cluster,omitempty"`
}

// Start samples the counters now and then every Options.Interval until ctx
// ends or Close is called. Calling it again, or after Close, does nothing.
func (m *Metrics) Start(ctx context.Context) {
	m.mu.Lock()
	if m.running || m.closed {
		m.mu.Unlock()
		return
	}
	m.running = true
	m.mu.Unlock()
	m.sample(m.now())
	go m.loop(ctx)
}

func (m *Metrics) loop(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.stop:
			return
		case <-t.C:
			m.sample(m.now())
		}
	}
}

// Close stops the sampler started by Start and waits for it to end.
func (m *Metrics) Close() {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		close(m.stop)
	}
	running := m.running
	m.mu.Unlock()
	if running {
		<-m.done
	}
}

// sample appends one history point taken at now. Rates are per second
// since the previous point; the first point has none.
func (m *Metrics) sample(now time.Time) {
	st := m.src.Stats()
	cur := totals{at: now, frames: st.FramesToBinary.Load() + st.FramesToPhone.Load(), drops: droppedTotal(st)}
	bins, phones := m.src.Counts()
	live, grace := m.ids()
	p := sample{T: now.Unix(), Binaries: bins, Phones: phones, LiveIDs: int64(live), GraceIDs: int64(grace)}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hasLast {
		if dt := cur.at.Sub(m.last.at).Seconds(); dt > 0 {
			p.FPS = float64(cur.frames-m.last.frames) / dt
			p.DPS = float64(cur.drops-m.last.drops) / dt
		}
	}
	m.last, m.hasLast = cur, true
	m.ring[m.next] = p
	m.next++
	if m.next == len(m.ring) {
		m.next, m.filled = 0, true
	}
}

// history returns the samples, oldest first, and the latest one.
func (m *Metrics) history() (out []sample, latest sample) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.filled {
		out = make([]sample, 0, len(m.ring))
		out = append(out, m.ring[m.next:]...)
	}
	out = append(out, m.ring[:m.next]...)
	if len(out) > 0 {
		latest = out[len(out)-1]
	}
	return out, latest
}

// status reads the live counts now and the rates of the latest sample.
func (m *Metrics) status() status {
	hist, latest := m.history()
	if hist == nil {
		hist = []sample{}
	}
	bins, phones := m.src.Counts()
	live, grace := m.ids()
	return status{
		Binaries:       bins,
		Phones:         phones,
		LiveIDs:        int64(live),
		GraceIDs:       int64(grace),
		FPS:            latest.FPS,
		DPS:            latest.DPS,
		UptimeSeconds:  int64(m.now().Sub(m.started) / time.Second),
		HistorySeconds: int64(time.Duration(len(m.ring)) * m.every / time.Second),
		History:        hist,
		Cluster:        m.cluster(),
	}
}

// cluster is the status's "cluster" object (node id, NATS state), nil on
// a single node.
func (m *Metrics) cluster() any {
	if m.clusterInfo == nil {
		return nil
	}
	return m.clusterInfo()
}

//go:embed status.html
var statusPage []byte

// pageCSP allows the page's own inline style and script and requests to
// this listener only.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; " +
	"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the metrics listener: GET /metrics (Prometheus text
// format), GET / (the status page) and GET /status.json (its data).
// Other methods on those paths get 405; any other path gets 404.
// A failing collector does not hide the other series; its error goes to
// Options.Log.
func (m *Metrics) Handler() http.Handler {
	opts := promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}
	if m.log != nil {
		opts.ErrorLog = slogPrintln{m.log}
	}
	prom := promhttp.HandlerFor(m.reg, opts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h http.HandlerFunc
		switch r.URL.Path {
		case "/metrics":
			h = prom.ServeHTTP
		case "/status.json":
			h = m.serveStatus
		case "/":
			h = servePage
		default:
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		h(w, r)
	})
}

func (m *Metrics) serveStatus(w http.ResponseWriter, _ *http.Request) {
	body, err := json.Marshal(m.status())
	if err != nil { // only plain numbers: cannot happen
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

func servePage(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusOK)
	w.Write(statusPage)
}

// slogPrintln adapts a slog.Logger to promhttp's error log.
type slogPrintln struct{ log *slog.Logger }

func (l slogPrintln) Println(v ...any) {
	for _, x := range v {
		if err, ok := x.(error); ok {
			l.log.Warn("metrics_collect_error", "err", err)
			return
		}
	}
	l.log.Warn("metrics_collect_error")
}
