package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/pyrycode/pyrycode-relay/internal/evloop"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

// startNATS runs a NATS server with JetStream on a random loopback port.
func startNATS(t testing.TB) *natsserver.Server {
	t.Helper()
	return startNATSAt(t, -1, t.TempDir())
}

func startNATSAt(t testing.TB, port int, dir string) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// testNode is one relay of a test cluster.
type testNode struct {
	t    testing.TB
	node *Node
	srv  *relay.Server
	hs   *httptest.Server
	url  string
	once sync.Once
}

// testLog keeps the last node_lost records (see nodeStats) and drops the
// rest.
var testLog = slog.New(&lostLog{})

type lostLog struct{}

var lostRecords struct {
	sync.Mutex
	last []string
}

func (*lostLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (*lostLog) WithAttrs([]slog.Attr) slog.Handler           { return &lostLog{} }
func (*lostLog) WithGroup(string) slog.Handler                { return &lostLog{} }
func (*lostLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "node_lost" {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Time.Format("15:04:05.000") + " node_lost")
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	lostRecords.Lock()
	lostRecords.last = append(lostRecords.last, b.String())
	if len(lostRecords.last) > 8 {
		lostRecords.last = lostRecords.last[1:]
	}
	lostRecords.Unlock()
	return nil
}

// liveNodes are the test nodes not yet cleaned up, for failure messages.
var liveNodes = struct {
	sync.Mutex
	m map[*testNode]struct{}
}{m: map[*testNode]struct{}{}}

// nodeStats says, for a failure message, what each live node counted of
// lost nodes, refusals and gaps.
func nodeStats() string {
	liveNodes.Lock()
	defer liveNodes.Unlock()
	var b strings.Builder
	for tn := range liveNodes.m {
		st := &tn.node.stats
		fmt.Fprintf(&b, "[%s: nodes lost %d, refused %d, gaps %d] ", tn.node.ID(), st.NodesLost.Load(), st.Refused.Load(), st.Gaps.Load())
	}
	lostRecords.Lock()
	fmt.Fprintf(&b, "; the last node_lost records (any test): %q", lostRecords.last)
	lostRecords.Unlock()
	return b.String()
}

func testConfig() relay.Config {
	return relay.Config{
		Grace:        2 * time.Second,
		ProbeTimeout: 300 * time.Millisecond,
		CloseWait:    300 * time.Millisecond,
		MaxPhones:    4,
	}
}

// startNode starts a relay node of cluster name on the NATS server at url.
func startNode(t testing.TB, natsURL, name string, rc relay.Config) *testNode {
	t.Helper()
	log := testLog
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return startNodeLog(t, natsURL, name, rc, log)
}

// countHandler counts log records at info and above.
type countHandler struct{ n atomic.Int64 }

func (h *countHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *countHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *countHandler) WithGroup(string) slog.Handler                { return h }

func startNodeLog(t testing.TB, natsURL, name string, rc relay.Config, log *slog.Logger) *testNode {
	t.Helper()
	return startNodeCfg(t, Config{URLs: natsURL, Name: name, Grace: rc.Grace, Heartbeat: 200 * time.Millisecond,
		DeadAfter: 1500 * time.Millisecond, RequestTimeout: time.Second, Log: log}, rc, log)
}

func startNodeCfg(t testing.TB, cc Config, rc relay.Config, log *slog.Logger) *testNode {
	t.Helper()
	n, err := Start(cc)
	if err != nil {
		t.Fatal(err)
	}
	rc.NodeID = n.ID()
	opts := []relay.Option{relay.WithDirectory(n), relay.WithClusterHealth(n.Health)}
	if g := clusterTestLoops(); g != nil {
		opts = append(opts, relay.WithLoops(g))
	}
	srv := relay.New(rc, log, opts...)
	hs := httptest.NewServer(srv)
	tn := &testNode{t: t, node: n, srv: srv, hs: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http")}
	liveNodes.Lock()
	liveNodes.m[tn] = struct{}{}
	liveNodes.Unlock()
	t.Cleanup(func() {
		liveNodes.Lock()
		delete(liveNodes.m, tn)
		liveNodes.Unlock()
	})
	t.Cleanup(tn.stop)
	return tn
}

// stop drains the node as SIGTERM does.
func (tn *testNode) stop() {
	tn.once.Do(func() {
		tn.node.Leave()
		tn.hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tn.srv.Shutdown(ctx); err != nil {
			tn.t.Errorf("shutdown: %v", err)
		}
		tn.node.Close()
	})
}

// crash kills the node: its NATS connection and every socket drop at once.
func (tn *testNode) crash() {
	tn.once.Do(func() {
		tn.node.crash()
		tn.hs.CloseClientConnections()
		tn.hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tn.srv.Shutdown(ctx)
	})
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// client is a pumped WebSocket client.
type client struct {
	c    *websocket.Conn
	msgs chan []byte
	done chan struct{}
	err  error
}

func dialWS(t testing.TB, url, path string, h http.Header) (*client, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(url+path, h)
	if err != nil {
		return nil, resp, err
	}
	cl := &client{c: c, msgs: make(chan []byte, 4096), done: make(chan struct{})}
	go func() {
		defer close(cl.done)
		for {
			_, m, err := c.ReadMessage()
			if err != nil {
				cl.err = err
				return
			}
			cl.msgs <- m
		}
	}()
	t.Cleanup(func() { c.Close() })
	return cl, resp, nil
}

func dialBinary(t testing.TB, tn *testNode, id string) *client {
	t.Helper()
	cl, _, err := dialWS(t, tn.url, "/v1/server", http.Header{wire.HeaderServer: {id}, wire.HeaderVersion: {"1"}, "User-Agent": {"test"}})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// stalledPhone dials a phone for id on tn with a 4 KiB receive buffer, sends
// hello and never reads; it returns the socket and the conn_id the binary
// bin saw hello arrive with.
func stalledPhone(t testing.TB, tn *testNode, id, hello string, bin *client) (*websocket.Conn, string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	ws, _, err := d.Dial(tn.url+"/v1/client", http.Header{wire.HeaderServer: {id}, wire.HeaderToken: {"t"}, "User-Agent": {"t"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	ws.WriteMessage(websocket.TextMessage, []byte(hello))
	cid := strings.TrimPrefix(bin.next(t), `{"conn_id":"`)
	return ws, cid[:strings.IndexByte(cid, '"')]
}

func phone(t testing.TB, tn *testNode, id string) *client {
	t.Helper()
	cl, _, err := dialWS(t, tn.url, "/v1/client", http.Header{wire.HeaderServer: {id}, wire.HeaderToken: {"tok"}, "User-Agent": {"test"}})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func (cl *client) send(t testing.TB, s string) {
	t.Helper()
	if err := cl.c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

func (cl *client) next(t testing.TB) string {
	t.Helper()
	select {
	case m := <-cl.msgs:
		return string(m)
	case <-cl.done:
		select {
		case m := <-cl.msgs:
			return string(m)
		default:
		}
		t.Fatalf("connection ended while a message was expected: %v", cl.err)
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return ""
}

// closed waits for the relay's close and checks code and reason (any
// reason when reason is "*").
func (cl *client) closed(t testing.TB, code int, reason string) {
	t.Helper()
	select {
	case <-cl.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("not closed within 10s (want %d %q)", code, reason)
	}
	ce, ok := cl.err.(*websocket.CloseError)
	if !ok || ce.Code != code || (reason != "*" && ce.Text != reason) {
		t.Fatalf("closed with %v, want %d %q", cl.err, code, reason)
	}
}

func (cl *client) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-cl.msgs:
		t.Fatalf("unexpected message %.200q", m)
	case <-cl.done:
		t.Fatalf("connection ended: %v", cl.err)
	case <-time.After(d):
	}
}

func env(connID, frame string) string {
	return `{"conn_id":"` + connID + `","frame":` + frame + `}`
}

// pair sends a first phone frame and returns the conn_id the binary saw.
func pair(t testing.TB, ph, bin *client, frame string) string {
	t.Helper()
	ph.send(t, frame)
	var got string
	select {
	case m := <-bin.msgs:
		got = string(m)
	case <-time.After(10 * time.Second):
		// Say which side failed: a phone refused (its registration
		// request to the owner timed out: 1013) is not a lost frame.
		select {
		case <-ph.done:
			t.Fatalf("the binary got nothing within 10s: the phone was closed (%v); nodes: %s", ph.err, nodeStats())
		case <-bin.done:
			t.Fatalf("the binary got nothing within 10s: its connection ended (%v)", bin.err)
		default:
			t.Fatal("the binary got nothing within 10s, and both ends are still open: the frame was lost")
		}
	}
	const pre = `{"conn_id":"`
	if !strings.HasPrefix(got, pre) {
		t.Fatalf("binary got %q", got)
	}
	id := got[len(pre):]
	id = id[:strings.IndexByte(id, '"')]
	if got != env(id, frame) {
		t.Fatalf("binary got %q, want %q", got, env(id, frame))
	}
	return id
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, 10*time.Second, what, cond)
}

func eventuallyWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gone reports whether the connection has ended.
func (cl *client) gone() bool {
	select {
	case <-cl.done:
		return true
	default:
		return false
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startNATSCluster runs three clustered NATS servers with JetStream and
// returns them and a client URL list naming all three. The ports are picked
// free and then bound by the servers, so another socket can take one in
// between (an outgoing connection's ephemeral port): a start that does not
// come up is retried on new ports, at most three times.
func startNATSCluster(t testing.TB) ([]*natsserver.Server, string) {
	t.Helper()
	var servers []*natsserver.Server
	var urls string
	for attempt := 1; ; attempt++ {
		var ok bool
		if servers, urls, ok = tryNATSCluster(t); ok {
			break
		}
		for _, ns := range servers {
			ns.Shutdown()
		}
		if attempt == 3 {
			t.Fatal("NATS cluster did not start (3 attempts)")
		}
	}
	eventually(t, "JetStream cluster ready", func() bool {
		for _, ns := range servers {
			if !ns.JetStreamIsCurrent() {
				return false
			}
		}
		return servers[0].JetStreamIsLeader() || servers[1].JetStreamIsLeader() || servers[2].JetStreamIsLeader()
	})
	return servers, urls
}

// tryNATSCluster starts three clustered servers on freshly picked ports and
// reports whether all of them came up.
func tryNATSCluster(t testing.TB) ([]*natsserver.Server, string, bool) {
	t.Helper()
	var routes, urls []string
	cports, ports := make([]int, 3), make([]int, 3)
	for i := range 3 {
		cports[i], ports[i] = freePort(t), freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cports[i]))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	servers := make([]*natsserver.Server, 0, 3)
	for i := range 3 {
		ns, err := natsserver.NewServer(&natsserver.Options{
			ServerName: fmt.Sprintf("s%d", i), Host: "127.0.0.1", Port: ports[i],
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: natsserver.ClusterOpts{Name: "relay-test", Host: "127.0.0.1", Port: cports[i]},
			Routes:  natsserver.RoutesFromStr(strings.Join(routes, ",")),
		})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		t.Cleanup(ns.Shutdown)
		servers = append(servers, ns)
	}
	for _, ns := range servers {
		if !ns.ReadyForConnections(20 * time.Second) {
			return servers, "", false
		}
	}
	return servers, strings.Join(urls, ","), true
}

// errorCounter counts log records at error level.
type errorCounter struct{ n atomic.Int64 }

func (h *errorCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h *errorCounter) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h *errorCounter) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *errorCounter) WithGroup(string) slog.Handler                { return h }

// verboseLog logs to the test's output under -v, else nowhere.
func verboseLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return testLog
}

// The cluster tests serve connections the way the relay does by default:
// on event loops where there are any (Linux), unless RELAY_TEST_IO=goroutine.
var (
	loopsOnce sync.Once
	loops     *evloop.Group
)

func clusterTestLoops() *evloop.Group {
	loopsOnce.Do(func() {
		if os.Getenv("RELAY_TEST_IO") == "goroutine" {
			return
		}
		if g, err := evloop.NewGroup(2); err == nil {
			loops = g
		}
	})
	return loops
}
