package metrics

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

var (
	outcomeLabels = []string{"accepted", "bad_headers", "bad_id", "not_websocket", "no_server", "conflict",
		"too_many_phones", "draining", "rate_limited", "ip_connection_cap", "connection_cap", "unavailable"}
	reasonLabels = []string{"malformed_envelope", "unknown_conn_id", "binary_opcode", "backlog_full",
		"queue_budget", "push_malformed", "push_off", "close_code_replaced"}
	codeLabels = []string{"1000", "1001", "1002", "1003", "1007", "1008", "1009", "1011", "1013", "4404", "4409", "4429", "other"}
)

// TestFreshRelayHasEverySeriesAtZero checks that a relay nobody has
// touched already exposes every labelled series, at zero, with its type.
func TestFreshRelayHasEverySeriesAtZero(t *testing.T) {
	if len(relay.Outcomes()) != len(outcomeLabels) {
		t.Fatalf("relay has %d outcomes, test knows %d: update outcomeLabels", len(relay.Outcomes()), len(outcomeLabels))
	}
	if len(relay.CloseCodes)+1 != len(codeLabels) {
		t.Fatalf("relay counts %d close codes, test knows %d: update codeLabels", len(relay.CloseCodes)+1, len(codeLabels))
	}
	e := newEnv(t, Options{})
	s := e.scrape()

	type family struct {
		name   string
		typ    dto.MetricType
		series [][]string
	}
	var (
		upgrades, closes [][]string
		drops            [][]string
	)
	for _, ep := range []string{"server", "client"} {
		for _, o := range outcomeLabels {
			upgrades = append(upgrades, []string{"endpoint=" + ep, "outcome=" + o})
		}
	}
	for _, role := range []string{"binary", "phone"} {
		for _, c := range codeLabels {
			closes = append(closes, []string{"role=" + role, "code=" + c})
		}
	}
	for _, r := range reasonLabels {
		drops = append(drops, []string{"reason=" + r})
	}
	directions := [][]string{{"direction=phone_to_binary"}, {"direction=binary_to_phone"}}
	families := []family{
		{"pyrycode_relay_connections", dto.MetricType_GAUGE, [][]string{{"role=binary"}, {"role=phone"}}},
		{"pyrycode_relay_server_ids", dto.MetricType_GAUGE, [][]string{{"state=live"}, {"state=grace"}}},
		{"pyrycode_relay_upgrades_total", dto.MetricType_COUNTER, upgrades},
		{"pyrycode_relay_frames_total", dto.MetricType_COUNTER, directions},
		{"pyrycode_relay_bytes_total", dto.MetricType_COUNTER, directions},
		{"pyrycode_relay_dropped_total", dto.MetricType_COUNTER, drops},
		{"pyrycode_relay_closes_total", dto.MetricType_COUNTER, closes},
		{"pyrycode_relay_grace_total", dto.MetricType_COUNTER,
			[][]string{{"outcome=reclaimed"}, {"outcome=expired"}, {"outcome=takeover"}}},
		{"pyrycode_relay_queued_bytes", dto.MetricType_GAUGE, [][]string{nil}},
	}
	for _, f := range families {
		mf, ok := s[f.name]
		if !ok {
			t.Errorf("%s missing", f.name)
			continue
		}
		if mf.GetType() != f.typ {
			t.Errorf("%s has type %v, want %v", f.name, mf.GetType(), f.typ)
		}
		if !strings.HasPrefix(mf.GetHelp(), strings.ToUpper(mf.GetHelp()[:1])) || len(mf.GetHelp()) < 20 {
			t.Errorf("%s help %q", f.name, mf.GetHelp())
		}
		if len(mf.GetMetric()) != len(f.series) {
			t.Errorf("%s has %d series, want %d", f.name, len(mf.GetMetric()), len(f.series))
		}
		for _, labels := range f.series {
			s.expect(t, 0, f.name, labels...)
		}
	}

	h, ok := s.series("pyrycode_relay_forward_seconds")
	if !ok || h.GetHistogram() == nil {
		t.Fatal("pyrycode_relay_forward_seconds histogram missing")
	}
	if h.GetHistogram().GetSampleCount() != 0 {
		t.Errorf("forward_seconds count = %d on a fresh relay", h.GetHistogram().GetSampleCount())
	}
	b := h.GetHistogram().GetBucket()
	// The text format lists the +Inf bucket too.
	if len(b) != len(ForwardBuckets)+1 || b[0].GetUpperBound() != 10e-6 || b[len(b)-2].GetUpperBound() != 10 ||
		!math.IsInf(b[len(b)-1].GetUpperBound(), 1) {
		t.Errorf("forward_seconds buckets %v", b)
	}

	// The standard runtime and process collectors are there too.
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total",
		"process_resident_memory_bytes", "process_open_fds"} {
		if _, ok := s[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	// And nothing else of ours: a new series must be added to this test.
	for name := range s {
		if strings.HasPrefix(name, "pyrycode_relay_") {
			known := name == "pyrycode_relay_forward_seconds"
			for _, f := range families {
				known = known || f.name == name
			}
			if !known {
				t.Errorf("unexpected family %s", name)
			}
		}
	}
}

// TestScrapeFollowsTraffic drives a binary and phones over real
// WebSockets and checks the exact values of the series they move.
func TestScrapeFollowsTraffic(t *testing.T) {
	e := newEnv(t, Options{})
	const id = "host-1.example"
	bin := e.binary(id)
	p1 := e.phone(id)
	p2 := e.phone(id)
	p3 := e.phone(id)

	s := e.scrape()
	s.expect(t, 1, "pyrycode_relay_connections", "role=binary")
	s.expect(t, 3, "pyrycode_relay_connections", "role=phone")
	s.expect(t, 1, "pyrycode_relay_server_ids", "state=live")
	s.expect(t, 0, "pyrycode_relay_server_ids", "state=grace")
	s.expect(t, 1, "pyrycode_relay_upgrades_total", "endpoint=server", "outcome=accepted")
	s.expect(t, 3, "pyrycode_relay_upgrades_total", "endpoint=client", "outcome=accepted")

	// Refused upgrades are counted under their outcome.
	req, _ := http.NewRequest(http.MethodGet, "http"+strings.TrimPrefix(e.relayWS, "ws")+"/v1/server", nil)
	req.Header.Set("X-Pyrycode-Server", "-not-an-id")
	req.Header.Set("X-Pyrycode-Version", "0.11.0")
	req.Header.Set("User-Agent", "pyry/0.11.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad id answered %d", resp.StatusCode)
	}

	// Two phone frames to the binary, two binary frames to a phone.
	const hello = `{"v":2,"type":"noise_init","data":"aGk="}`
	c1 := connIDOf(t, p1, bin, hello)
	c2 := connIDOf(t, p2, bin, hello)
	const reply = `{"v":2,"type":"noise_resp","data":"eW8="}`
	send(t, bin, `{"conn_id":"`+c1+`","frame":`+reply+`}`)
	if got := string(read(t, p1)); got != reply {
		t.Fatalf("phone got %q", got)
	}

	// One of every drop the binary can cause, then a close directive whose
	// code is not allowed on the wire.
	send(t, bin, `not json`)
	send(t, bin, `{"conn_id":"c-0000000000000000","frame":{}}`)
	bin.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := bin.WriteMessage(websocket.BinaryMessage, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	send(t, bin, `{"push_wake":{"platform":"fcm","token":"push-token"}}`)
	send(t, bin, `{"push_wake":{"platform":"pager","token":"push-token"}}`)
	send(t, bin, `{"conn_id":"`+c2+`","frame":null,"close_code":999}`)
	// The binary's messages are handled in order: once this one arrives,
	// every message before it has been counted.
	const marker = `{"v":2,"type":"noise_msg","data":"bWFyaw=="}`
	send(t, bin, `{"conn_id":"`+c1+`","frame":`+marker+`}`)
	if got := string(read(t, p1)); got != marker {
		t.Fatalf("phone got %q", got)
	}
	expectCloseCode(t, p2, 1011)

	// A phone that leaves on its own.
	closeWith(t, p3, 1000)
	eventually(t, func() bool { _, n := e.srv.Counts(); return n == 1 })

	s = e.scrape()
	s.expect(t, 1, "pyrycode_relay_connections", "role=phone")
	s.expect(t, 1, "pyrycode_relay_upgrades_total", "endpoint=server", "outcome=bad_id")
	s.expect(t, 0, "pyrycode_relay_upgrades_total", "endpoint=server", "outcome=bad_headers")
	s.expect(t, 2, "pyrycode_relay_frames_total", "direction=phone_to_binary")
	s.expect(t, 2, "pyrycode_relay_frames_total", "direction=binary_to_phone")
	s.expect(t, float64(2*len(hello)), "pyrycode_relay_bytes_total", "direction=phone_to_binary")
	s.expect(t, float64(len(reply)+len(marker)), "pyrycode_relay_bytes_total", "direction=binary_to_phone")
	for _, r := range reasonLabels {
		want := 1.0
		if r == "backlog_full" || r == "queue_budget" {
			want = 0
		}
		s.expect(t, want, "pyrycode_relay_dropped_total", "reason="+r)
	}
	s.expect(t, 1, "pyrycode_relay_closes_total", "role=phone", "code=1011")
	s.expect(t, 1, "pyrycode_relay_closes_total", "role=phone", "code=1000")
	s.expect(t, 0, "pyrycode_relay_closes_total", "role=binary", "code=1000")
	// The queue gauge falls once the writer is done, which may be just
	// after the phone has read the frame.
	eventually(t, func() bool { return e.scrape().value(t, "pyrycode_relay_queued_bytes") == 0 })

	// Every written frame was timed: two to the binary, two to p1.
	eventually(t, func() bool {
		h, _ := e.scrape().series("pyrycode_relay_forward_seconds")
		return h.GetHistogram().GetSampleCount() == 4
	})
	h, _ := e.scrape().series("pyrycode_relay_forward_seconds")
	if sum := h.GetHistogram().GetSampleSum(); sum <= 0 || sum > 20 {
		t.Errorf("forward_seconds sum = %v", sum)
	}

	// The binary leaves: its id goes into grace and p1 waits there.
	closeWith(t, bin, 1001)
	eventually(t, func() bool { b, _ := e.srv.Counts(); return b == 0 })
	eventually(t, func() bool { _, g := e.dir.Counts(); return g == 1 })
	s = e.scrape()
	s.expect(t, 0, "pyrycode_relay_connections", "role=binary")
	s.expect(t, 1, "pyrycode_relay_connections", "role=phone")
	s.expect(t, 0, "pyrycode_relay_server_ids", "state=live")
	s.expect(t, 1, "pyrycode_relay_server_ids", "state=grace")
	s.expect(t, 1, "pyrycode_relay_closes_total", "role=binary", "code=1001")

	// It comes back within the grace period: reclaimed, and the phone of
	// the old session is closed 4404.
	e.binary(id)
	expectCloseCode(t, p1, 4404)
	eventually(t, func() bool { _, n := e.srv.Counts(); return n == 0 })
	s = e.scrape()
	s.expect(t, 1, "pyrycode_relay_grace_total", "outcome=reclaimed")
	s.expect(t, 0, "pyrycode_relay_grace_total", "outcome=expired")
	s.expect(t, 0, "pyrycode_relay_grace_total", "outcome=takeover")
	s.expect(t, 1, "pyrycode_relay_server_ids", "state=live")
	s.expect(t, 0, "pyrycode_relay_server_ids", "state=grace")
	s.expect(t, 2, "pyrycode_relay_upgrades_total", "endpoint=server", "outcome=accepted")
	s.expect(t, 1, "pyrycode_relay_closes_total", "role=phone", "code=4404")
}

// expectCloseCode reads c until the relay closes it and checks the code.
func expectCloseCode(t *testing.T, c *websocket.Conn, code int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code {
			t.Fatalf("want close %d, got %v", code, err)
		}
		return
	}
}

// TestRegisterAddsCollectors checks that extra collectors appear in the
// scrape and that a duplicate is refused.
func TestRegisterAddsCollectors(t *testing.T) {
	e := newEnv(t, Options{})
	sent := prometheus.NewCounter(prometheus.CounterOpts{Name: "pyrycode_relay_push_sent_total", Help: "Push wakes sent."})
	if err := e.m.Register(sent); err != nil {
		t.Fatal(err)
	}
	sent.Add(3)
	e.scrape().expect(t, 3, "pyrycode_relay_push_sent_total")
	if err := e.m.Register(sent); err == nil {
		t.Error("registering the same collector twice succeeded")
	}
	// A collector clashing with a relay series is refused too.
	clash := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pyrycode_relay_queued_bytes", Help: "Clash."})
	if err := e.m.Register(clash); err == nil {
		t.Error("a second pyrycode_relay_queued_bytes was accepted")
	}
}

// TestMetricsUseAPrivateRegistry checks that nothing lands in the global
// default registry.
func TestMetricsUseAPrivateRegistry(t *testing.T) {
	newEnv(t, Options{})
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "pyrycode_relay_") {
			t.Errorf("%s is in the default registry", f.GetName())
		}
	}
}

func TestCloseCodeLabelsFollowTheRelay(t *testing.T) {
	for i, c := range relay.CloseCodes {
		if closeCodeLabels[i] != strconv.Itoa(c) {
			t.Errorf("label %d = %q, want %d", i, closeCodeLabels[i], c)
		}
	}
	if closeCodeLabels[len(relay.CloseCodes)] != "other" {
		t.Error("last code label is not other")
	}
}

// brokenCollector fails every collection.
type brokenCollector struct{ desc *prometheus.Desc }

func (b brokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }
func (b brokenCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(b.desc, errors.New("backend unreachable"))
}

// lockedBuffer is a log sink safe to read while the server writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestFailingCollectorKeepsTheRest checks that one broken extra collector
// is logged and does not blank the relay's series.
func TestFailingCollectorKeepsTheRest(t *testing.T) {
	var logs lockedBuffer
	e := newEnv(t, Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	broken := brokenCollector{prometheus.NewDesc("pyrycode_relay_broken", "Always fails.", nil, nil)}
	if err := e.m.Register(broken); err != nil {
		t.Fatal(err)
	}
	e.binary("host-9")
	s := e.scrape()
	s.expect(t, 1, "pyrycode_relay_connections", "role=binary")
	if _, ok := s["pyrycode_relay_broken"]; ok {
		t.Error("the broken collector's series was served")
	}
	if l := logs.String(); !strings.Contains(l, "metrics_collect_error") || !strings.Contains(l, "backend unreachable") {
		t.Errorf("log %q", l)
	}
}
