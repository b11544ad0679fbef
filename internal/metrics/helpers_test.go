package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/pyrycode/pyrycode-relay/internal/registry"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

func TestMain(m *testing.M) {
	// Idle pooled writers park in writerWorker until they time out.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/pyrycode/pyrycode-relay/internal/peer.writerWorker"))
}

// env is a relay on a loopback listener with its metrics served on
// another, wired the way the command wires them.
type env struct {
	t       *testing.T
	srv     *relay.Server
	dir     *registry.Registry[relay.Binary, relay.Phone]
	m       *Metrics
	relayWS string // ws://127.0.0.1:port
	metrics string // http://127.0.0.1:port
}

// newEnv starts a relay and its metrics listener; opt.Forward is set here.
// Everything is stopped when the test ends.
func newEnv(t *testing.T, opt Options) *env {
	t.Helper()
	fwd := NewForwardHistogram()
	opt.Forward = fwd
	dir := registry.New[relay.Binary, relay.Phone]()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := relay.New(relay.Config{Grace: time.Minute, CloseWait: 500 * time.Millisecond}, log,
		relay.WithDirectory(dir), relay.WithForwardObserver(fwd.Observe))
	m := New(srv, dir.Counts, opt)
	rs := httptest.NewServer(srv)
	ms := httptest.NewServer(m.Handler())
	t.Cleanup(func() {
		ms.Close()
		m.Close()
		rs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("relay shutdown: %v", err)
		}
	})
	return &env{t: t, srv: srv, dir: dir, m: m,
		relayWS: "ws" + strings.TrimPrefix(rs.URL, "http"), metrics: ms.URL}
}

func (e *env) dial(path string, h http.Header) *websocket.Conn {
	e.t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(e.relayWS+path, h)
	if err != nil {
		e.t.Fatalf("dial %s: %v (response %v)", path, err, resp)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// binary connects a binary holding id and waits until it is registered.
func (e *env) binary(id string) *websocket.Conn {
	e.t.Helper()
	before, _ := e.srv.Counts()
	c := e.dial("/v1/server", http.Header{"X-Pyrycode-Server": {id}, "X-Pyrycode-Version": {"0.11.0"},
		"User-Agent": {"pyry/0.11.0"}})
	eventually(e.t, func() bool { b, _ := e.srv.Counts(); return b > before })
	return c
}

// phone connects a phone to id and waits until it is registered.
func (e *env) phone(id string) *websocket.Conn {
	e.t.Helper()
	_, before := e.srv.Counts()
	c := e.dial("/v1/client", http.Header{"X-Pyrycode-Server": {id}, "X-Pyrycode-Token": {"device-token"},
		"User-Agent": {"pyrycode-mobile/1.0.0"}, "X-Pyrycode-Device-Name": {"test phone"}})
	eventually(e.t, func() bool { _, p := e.srv.Counts(); return p > before })
	return c
}

// get fetches path from the metrics listener.
func (e *env) get(path string) (*http.Response, []byte) {
	e.t.Helper()
	return httpGet(e.t, e.metrics+path)
}

func httpGet(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, body
}

// scrape is one parsed /metrics answer.
type scrape map[string]*dto.MetricFamily

func (e *env) scrape() scrape {
	e.t.Helper()
	resp, body := e.get("/metrics")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("/metrics status %d: %s", resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		e.t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// series finds the sample of name whose labels are exactly labels
// ("k=v" pairs).
func (s scrape) series(name string, labels ...string) (*dto.Metric, bool) {
	f, ok := s[name]
	if !ok {
		return nil, false
	}
	want := map[string]string{}
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		want[k] = v
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

// value is the value of a gauge or counter series; the test fails when
// the series is missing.
func (s scrape) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m, ok := s.series(name, labels...)
	if !ok {
		t.Fatalf("series %s%v missing", name, labels)
	}
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	t.Fatalf("series %s%v is not a gauge or counter", name, labels)
	return 0
}

// expect checks one series' value.
func (s scrape) expect(t *testing.T, want float64, name string, labels ...string) {
	t.Helper()
	if got := s.value(t, name, labels...); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func send(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func read(t *testing.T, c *websocket.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return msg
}

// connIDOf sends frame from phone and returns the conn_id the binary got.
func connIDOf(t *testing.T, phone, bin *websocket.Conn, frame string) string {
	t.Helper()
	send(t, phone, frame)
	env := read(t, bin)
	const pre = `{"conn_id":"`
	if !bytes.HasPrefix(env, []byte(pre)) {
		t.Fatalf("envelope %q", env)
	}
	rest := env[len(pre):]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

// closeWith closes c with code and waits for the relay's answer.
func closeWith(t *testing.T, c *websocket.Conn, code int) {
	t.Helper()
	msg := websocket.FormatCloseMessage(code, "")
	if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(5*time.Second)); err != nil {
		t.Fatalf("close: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("waiting for the close echo: %v", err)
			}
			return
		}
	}
}
