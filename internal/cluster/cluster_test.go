package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A phone on node B reaches a binary on node A byte for byte, both ways,
// in order; close directives and close notices cross too.
func TestCrossNodeRouting(t *testing.T) {
	ns := startNATS(t)
	a := startNode(t, ns.ClientURL(), "t1", testConfig())
	b := startNode(t, ns.ClientURL(), "t1", testConfig())
	bin := dialBinary(t, a, "srv-1")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	ph := phone(t, b, "srv-1")
	first := `{"v":2,"type":"noise_init","data":"aGVsbG8="}`
	cid := pair(t, ph, bin, first)

	// Order under load, both directions at once.
	const n = 500
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			if err := bin.c.WriteMessage(1, []byte(env(cid, fmt.Sprintf(`{"i":%d,"down":"\u00e9 x"}`, i)))); err != nil {
				return
			}
		}
	}()
	for i := range n {
		ph.send(t, fmt.Sprintf(`{"i":%d, "up" : [1,2]}`, i))
	}
	for i := range n {
		if got, want := bin.next(t), env(cid, fmt.Sprintf(`{"i":%d, "up" : [1,2]}`, i)); got != want {
			t.Fatalf("binary got %q, want %q", got, want)
		}
	}
	for i := range n {
		if got, want := ph.next(t), fmt.Sprintf(`{"i":%d,"down":"\u00e9 x"}`, i); got != want {
			t.Fatalf("phone got %q, want %q", got, want)
		}
	}
	wg.Wait()

	// A close directive with a frame: the frame, then the exact code.
	bin.send(t, `{"conn_id":"`+cid+`","frame":{"bye":1},"close_code":4401}`)
	if got := ph.next(t); got != `{"bye":1}` {
		t.Fatalf("phone got %q", got)
	}
	ph.closed(t, 4401, "")
	bin.quiet(t, 300*time.Millisecond) // no notice after a directive

	// A phone that closes itself: the binary gets the notice.
	ph2 := phone(t, b, "srv-1")
	cid2 := pair(t, ph2, bin, `{"n":2}`)
	ph2.c.WriteMessage(8, []byte{0x0f, 0xa0}) // close 4000
	if got, want := bin.next(t), `{"conn_id":"`+cid2+`","close_code":4000}`; got != want {
		t.Fatalf("notice %q, want %q", got, want)
	}
}

// 4404 for an id nobody holds anywhere, and 4429 counts phones on every
// node: 16 phones spread over two nodes all route, the 17th is refused.
func TestCrossNodeNoServerAndPhoneCap(t *testing.T) {
	ns := startNATS(t)
	cfg := testConfig()
	cfg.MaxPhones = 16
	a := startNode(t, ns.ClientURL(), "t2", cfg)
	b := startNode(t, ns.ClientURL(), "t2", cfg)
	phone(t, b, "nobody").closed(t, 4404, "no server with that id")
	bin := dialBinary(t, a, "capped")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	var phones []*client
	for i := range 16 {
		node := a
		if i%2 == 1 {
			node = b
		}
		phones = append(phones, phone(t, node, "capped"))
	}
	for i, ph := range phones {
		cid := pair(t, ph, bin, fmt.Sprintf(`{"phone":%d}`, i))
		bin.send(t, env(cid, fmt.Sprintf(`{"to":%d}`, i)))
		if got := ph.next(t); got != fmt.Sprintf(`{"to":%d}`, i) {
			t.Fatalf("phone %d got %q", i, got)
		}
	}
	phone(t, b, "capped").closed(t, 4429, "too many phones for server-id")
	phone(t, a, "capped").closed(t, 4429, "too many phones for server-id")
}

// Two binaries claim one fresh id at the same instant on two nodes: exactly
// one holds it and the other gets 4409, every time.
func TestSimultaneousClaims(t *testing.T) {
	ns := startNATS(t)
	a := startNode(t, ns.ClientURL(), "t3", testConfig())
	b := startNode(t, ns.ClientURL(), "t3", testConfig())
	for round := range 20 {
		id := fmt.Sprintf("race-%d", round)
		var wg sync.WaitGroup
		cls := make([]*client, 2)
		for i, node := range []*testNode{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cls[i] = dialBinary(t, node, id)
			}()
		}
		wg.Wait()
		// The loser is closed 4409 after its probe is answered (gorilla
		// answers pings while reading).
		refused := -1
		for i, cl := range cls {
			select {
			case <-cl.done:
				refused = i
			case <-time.After(2 * time.Second):
			}
		}
		if refused < 0 {
			t.Fatalf("round %d: both binaries hold %s", round, id)
		}
		cls[refused].closed(t, 4409, "server-id already claimed")
		cls[1-refused].quiet(t, 10*time.Millisecond)
		cls[1-refused].c.Close()
		cls[refused].c.Close()
	}
}

// A binary that drops on node A and reconnects to node B within the grace
// period is accepted; every phone of the id on every node is closed with
// 4404 "binary reclaimed server-id", and new phones route to the new binary.
func TestReclaimOnAnotherNode(t *testing.T) {
	ns := startNATS(t)
	a := startNode(t, ns.ClientURL(), "t4", testConfig())
	b := startNode(t, ns.ClientURL(), "t4", testConfig())
	bin := dialBinary(t, a, "moving")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	pa := phone(t, a, "moving")
	pb := phone(t, b, "moving")
	pair(t, pa, bin, `{"on":"a"}`)
	pair(t, pb, bin, `{"on":"b"}`)
	bin.c.Close() // dropped without a close frame
	eventually(t, "grace began", func() bool { _, g := a.node.Counts(); return g == 1 })
	bin2 := dialBinary(t, b, "moving")
	pa.closed(t, 4404, "binary reclaimed server-id")
	pb.closed(t, 4404, "binary reclaimed server-id")
	bin2.quiet(t, 100*time.Millisecond)
	for _, node := range []*testNode{a, b} {
		ph := phone(t, node, "moving")
		pair(t, ph, bin2, `{"new":true}`)
	}
}

// Grace expiry closes the id's phones on every node with 1000; a phone
// frame during grace gets 4404.
func TestGraceExpiryAcrossNodes(t *testing.T) {
	ns := startNATS(t)
	cfg := testConfig()
	cfg.Grace = 500 * time.Millisecond
	a := startNode(t, ns.ClientURL(), "t5", cfg)
	b := startNode(t, ns.ClientURL(), "t5", cfg)
	bin := dialBinary(t, a, "fading")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	pa := phone(t, a, "fading")
	pb := phone(t, b, "fading")
	pb2 := phone(t, b, "fading")
	pair(t, pb2, bin, `{"x":1}`)
	bin.c.Close()
	eventually(t, "grace began", func() bool { _, g := a.node.Counts(); return g == 1 })
	pb2.send(t, `{"during":"grace"}`)
	pb2.closed(t, 4404, "no server with that id")
	pa.closed(t, 1000, "")
	pb.closed(t, 1000, "")
	phone(t, b, "fading").closed(t, 4404, "no server with that id")
}

// A node killed outright: its binary reclaims on another node at the first
// attempt; phones on surviving nodes whose binary was there get 4404 on
// their next frame, or 4404 "binary reclaimed server-id" on the reclaim.
func TestNodeLoss(t *testing.T) {
	ns := startNATS(t)
	a := startNode(t, ns.ClientURL(), "t6", testConfig())
	b := startNode(t, ns.ClientURL(), "t6", testConfig())
	c := startNode(t, ns.ClientURL(), "t6", testConfig())
	bin := dialBinary(t, a, "lost")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	pb := phone(t, b, "lost")
	pc := phone(t, c, "lost")
	pair(t, pb, bin, `{"b":1}`)
	pair(t, pc, bin, `{"c":1}`)
	a.crash()
	// The reclaim works at once, however soon after the crash.
	bin2 := dialBinary(t, b, "lost")
	pb.closed(t, 4404, "binary reclaimed server-id")
	pc.closed(t, 4404, "binary reclaimed server-id")
	bin2.quiet(t, 100*time.Millisecond)
	pair(t, phone(t, c, "lost"), bin2, `{"again":1}`)

	// Orphans of a lost node: 4404 on their next frame.
	bin3 := dialBinary(t, c, "lost-2")
	eventually(t, "binary registered", func() bool { l, _ := c.node.Counts(); return l == 1 })
	pb3 := phone(t, b, "lost-2")
	pair(t, pb3, bin3, `{"z":1}`)
	c.crash()
	eventually(t, "node c seen gone", func() bool { return b.node.Stats().NodesLost.Load() >= 2 })
	if pb3.gone() {
		t.Fatalf("phone closed before its next frame: %v", pb3.err)
	}
	pb3.send(t, `{"after":"loss"}`)
	pb3.closed(t, 4404, "no server with that id")
	// b sent to c (pb3's frames), so it had an outbox for c; c is gone,
	// and so is the outbox (node ids are new per process: kept, they
	// would pile up with every restart).
	b.node.omu.Lock()
	_, kept := b.node.outs[c.node.ID()]
	b.node.omu.Unlock()
	if kept {
		t.Fatal("the outbox of a lost node is kept")
	}

	// One grace period after the loss, the dead node's entry is swept out
	// of the bucket (nothing reclaimed it); the reclaimed id stays.
	eventually(t, "stale entry swept", func() bool {
		_, err := b.node.kv.Get(t.Context(), key("lost-2"))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	if e, err := b.node.kv.Get(t.Context(), key("lost")); err != nil || string(e.Value()) != b.node.ID() {
		t.Fatalf("reclaimed id's entry: %v", err)
	}
	phone(t, c2(t, ns, b), "lost-2").closed(t, 4404, "no server with that id")
}

// c2 starts one more node of b's cluster.
func c2(t *testing.T, ns *natsserver.Server, b *testNode) *testNode {
	return startNode(t, ns.ClientURL(), b.node.cfg.Name, testConfig())
}

// SIGTERM on one node: its connections close with 1001, its binary
// reclaims on another node at once, and phones elsewhere learn of the
// reclaim.
func TestDrainOneNode(t *testing.T) {
	ns := startNATS(t)
	a := startNode(t, ns.ClientURL(), "t7", testConfig())
	b := startNode(t, ns.ClientURL(), "t7", testConfig())
	bin := dialBinary(t, a, "rolling")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	pb := phone(t, b, "rolling")
	pair(t, pb, bin, `{"p":1}`)
	a.stop()
	bin.closed(t, 1001, "shutting down")
	pb.quiet(t, 200*time.Millisecond) // grace, not a close
	bin2 := dialBinary(t, b, "rolling")
	pb.closed(t, 4404, "binary reclaimed server-id")
	pair(t, phone(t, b, "rolling"), bin2, `{"p":2}`)
}

// While NATS is down, a pair on one node keeps working, cross-node phones
// are closed (1011) rather than lose frames, and claims and remote phones
// are refused with 1013; when NATS is back the nodes rejoin by themselves.
func TestNATSOutageAndRecovery(t *testing.T) {
	dir := t.TempDir()
	ns := startNATSAt(t, -1, dir)
	port := ns.Addr().(*net.TCPAddr).Port
	a := startNode(t, ns.ClientURL(), "t8", testConfig())
	b := startNode(t, ns.ClientURL(), "t8", testConfig())
	bin := dialBinary(t, a, "steady")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	local := phone(t, a, "steady")
	remote := phone(t, b, "steady")
	lcid := pair(t, local, bin, `{"local":1}`)
	pair(t, remote, bin, `{"remote":1}`)
	dialBinary(t, b, "remote-id")
	eventually(t, "binary registered", func() bool { l, _ := b.node.Counts(); return l == 1 })

	ns.Shutdown()
	eventually(t, "nodes see NATS gone", func() bool { return !a.node.Connected() && !b.node.Connected() })
	remote.closed(t, 1011, "relay node unavailable")
	bin.send(t, env(lcid, `{"still":"here"}`))
	if got := local.next(t); got != `{"still":"here"}` {
		t.Fatalf("local phone got %q", got)
	}
	local.send(t, `{"up":"still"}`)
	if got := bin.next(t); got != env(lcid, `{"up":"still"}`) {
		// the close notice of the remote phone may come first
		if got2 := bin.next(t); got2 != env(lcid, `{"up":"still"}`) {
			t.Fatalf("binary got %q then %q", got, got2)
		}
	}
	dialBinary(t, b, "during-outage").closed(t, 1013, "try again later")
	phone(t, a, "remote-id").closed(t, 1013, "try again later")
	resp, err := http.Get(strings.Replace(a.url, "ws", "http", 1) + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Cluster map[string]string `json:"cluster"`
	}
	json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if resp.StatusCode != 200 || h.Cluster["nats"] != "disconnected" {
		t.Fatalf("healthz during the outage: %d %v", resp.StatusCode, h.Cluster)
	}

	startNATSAt(t, port, dir)
	eventually(t, "nodes rejoin", func() bool { return a.node.Connected() && b.node.Connected() })
	again := phone(t, b, "steady")
	pair(t, again, bin, `{"after":"outage"}`)
	bin2 := dialBinary(t, b, "after-outage")
	eventually(t, "binary registered", func() bool { l, _ := b.node.Counts(); return l == 2 })
	pair(t, phone(t, a, "after-outage"), bin2, `{"new":1}`)
}

// A stalled phone on node B is closed (1011 "phone backlog full") without
// slowing its binary on node A or its sibling.
func TestStalledCrossNodePhone(t *testing.T) {
	ns := startNATS(t)
	cfg := testConfig()
	cfg.MaxFrameBytes = 8 << 10
	cfg.PhoneQueueBytes = 64 << 10
	a := startNode(t, ns.ClientURL(), "t9", cfg)
	b := startNode(t, ns.ClientURL(), "t9", cfg)
	bin := dialBinary(t, a, "stall")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	_, scid := stalledPhone(t, b, "stall", `{"stalled":1}`, bin) // never reads
	sib := phone(t, b, "stall")
	sibID := pair(t, sib, bin, `{"sibling":1}`)
	big := `{"pad":"` + strings.Repeat("x", 4000) + `"}`
	notice := `{"conn_id":"` + scid + `","close_code":1011}`
	for i := range 3000 {
		bin.send(t, env(scid, big))
		if i%100 == 0 {
			bin.send(t, env(sibID, fmt.Sprintf(`{"sib":%d}`, i)))
			if got := sib.next(t); got != fmt.Sprintf(`{"sib":%d}`, i) {
				t.Fatalf("sibling got %q", got)
			}
		}
		select {
		case m := <-bin.msgs:
			if string(m) != notice {
				t.Fatalf("binary got %q, want the stalled phone's notice", m)
			}
			return
		default:
		}
	}
	if got := bin.next(t); got != notice {
		t.Fatalf("binary got %q, want %q", got, notice)
	}
}

// The daemon answers every close notice with a 4421 close directive for the
// conn that went away. Those die on the binary's node: 1,000 phones on
// another node disconnecting at once cost no log line and no cross-node
// message for the directives.
func TestDirectivesForGonePhonesStayHome(t *testing.T) {
	ns := startNATS(t)
	cfg := testConfig()
	cfg.MaxPhones = 1000
	var logged countHandler
	a := startNodeLog(t, ns.ClientURL(), "t10", cfg, slog.New(&logged))
	b := startNode(t, ns.ClientURL(), "t10", cfg)
	bin := dialBinary(t, a, "many")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	phones := make([]*client, 1000)
	for i := range phones {
		phones[i] = phone(t, b, "many")
	}
	eventually(t, "phones registered", func() bool {
		a.node.mu.Lock()
		defer a.node.mu.Unlock()
		return a.node.remote.size() == 1000
	})
	sentBefore := a.node.Stats().MsgsOut[1].Load()
	droppedBefore := a.srv.Stats().DroppedUnknownConn.Load()
	logged.n.Store(0)
	for _, ph := range phones {
		ph.c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
	}
	for range phones {
		n := bin.next(t)
		const pre = `{"conn_id":"`
		cid := strings.TrimPrefix(n, pre)
		cid = cid[:strings.IndexByte(cid, '"')]
		if n != pre+cid+`","close_code":1000}` {
			t.Fatalf("binary got %q", n)
		}
		bin.send(t, `{"conn_id":"`+cid+`","frame":null,"close_code":4421}`)
	}
	eventually(t, "directives dropped", func() bool { return a.srv.Stats().DroppedUnknownConn.Load()-droppedBefore == 1000 })
	if n := a.node.Stats().MsgsOut[1].Load() - sentBefore; n != 0 {
		t.Fatalf("%d messages crossed to phones' node for gone phones", n)
	}
	if n := logged.n.Load(); n != 0 {
		t.Fatalf("%d log lines at info or above for 1,000 gone phones", n)
	}
}

// A 3-server NATS cluster loses the server a relay node is connected to:
// the node moves to another server by itself, the ownership bucket (three
// replicas) survives, and claims and cross-node pairs work on.
func TestNATSClusterLosesAServer(t *testing.T) {
	servers, urls := startNATSCluster(t)
	cfg := testConfig()
	mk := func() *testNode {
		return startNodeCfg(t, Config{URLs: urls, Name: "t11", Grace: cfg.Grace, Replicas: 3, Heartbeat: 200 * time.Millisecond,
			DeadAfter: 1500 * time.Millisecond, RequestTimeout: 3 * time.Second, ConnectTimeout: 30 * time.Second, Log: verboseLog(t)}, cfg, verboseLog(t))
	}
	// The bucket is made first, retried while the new JetStream cluster
	// settles its meta leader (slow on a loaded machine); the nodes then
	// use it as it is.
	nc, err := nats.Connect(urls)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	eventuallyWithin(t, 90*time.Second, "ownership bucket with 3 replicas", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketName("t11"), History: 1, Replicas: 3, Storage: jetstream.FileStorage})
		return err == nil || errors.Is(err, jetstream.ErrBucketExists)
	})
	a, b := mk(), mk()
	// JetStream may still be placing the bucket's replicas: a claim meanwhile
	// is refused with 1013 (never 4409) and retried, as the daemon would.
	bin := claimEventually(t, a, "sturdy")
	old, oldID := pairEventually(t, b, "sturdy", bin, `{"before":1}`)

	connected := a.node.nc.ConnectedServerName()
	for _, ns := range servers {
		if ns.Name() == connected {
			ns.Shutdown()
		}
	}
	eventuallyWithin(t, 45*time.Second, "node a moved to another server", func() bool {
		return a.node.Connected() && a.node.nc.ConnectedServerName() != connected
	})
	// Claims and pairs across nodes work on, retried while JetStream
	// elects new leaders (a refusal then is 1013, never 4409).
	bin2 := claimEventually(t, b, "after-loss")
	pairEventually(t, a, "after-loss", bin2, `{"after":1}`)
	// The pair that crossed the lost server's node: node a could not keep
	// its stream whole, so the binary was told the phone went (1011) and
	// the phone is closed, never left sending into the void.
	if got := bin.next(t); got != `{"conn_id":"`+oldID+`","close_code":1011}` {
		t.Fatalf("binary got %q", got)
	}
	old.closed(t, 1011, "relay node unavailable")
	pairEventually(t, b, "sturdy", bin, `{"after":2}`)
}

// Two processes given the same --node-id: each says so in its log.
func TestNodeIDConflictIsLogged(t *testing.T) {
	ns := startNATS(t)
	var la, lb errorCounter
	mk := func(l *errorCounter) *testNode {
		return startNodeCfg(t, Config{URLs: ns.ClientURL(), Name: "t12", NodeID: "twin", Heartbeat: 100 * time.Millisecond, Log: slog.New(l)}, testConfig(), testLog)
	}
	mk(&la)
	mk(&lb)
	eventually(t, "conflict logged by both", func() bool { return la.n.Load() > 0 && lb.n.Load() > 0 })
}

// claimEventually dials a binary for id on tn until its claim holds: a
// refusal must be 1013 (the cluster could not settle it yet), never 4409.
func claimEventually(t *testing.T, tn *testNode, id string) *client {
	t.Helper()
	var bin *client
	eventuallyWithin(t, 45*time.Second, "claim of "+id, func() bool {
		c := dialBinary(t, tn, id)
		deadline := time.After(3 * tn.node.cfg.RequestTimeout)
		for {
			// Held here and written to the bucket (a hold alone may still
			// be undone).
			if holder, _ := tn.node.reg.State(id); holder != nil && tn.node.ownedRev(id) != 0 {
				bin = c
				return true
			}
			select {
			case <-c.done:
				c.closed(t, 1013, "try again later")
				return false
			case <-deadline:
				c.c.Close()
				return false
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	return bin
}

// pairEventually connects a phone for id on tn and pairs it with bin,
// redialling while the cluster answers 1013 (it could not ask the bucket
// or the owner yet), as the app would.
func pairEventually(t *testing.T, tn *testNode, id string, bin *client, frame string) (*client, string) {
	t.Helper()
	var ph *client
	var cid string
	eventuallyWithin(t, 45*time.Second, "phone of "+id, func() bool {
		c := phone(t, tn, id)
		_ = c.c.WriteMessage(websocket.TextMessage, []byte(frame)) // fails if already refused
		select {
		case m := <-bin.msgs:
			got := string(m)
			const pre = `{"conn_id":"`
			cid = strings.TrimPrefix(got, pre)
			cid = cid[:strings.IndexByte(cid, '"')]
			if got != env(cid, frame) {
				t.Fatalf("binary got %q", got)
			}
			ph = c
			return true
		case <-c.done:
			c.closed(t, 1013, "try again later")
			return false
		case <-time.After(10 * time.Second):
			t.Fatalf("phone of %s: neither paired nor refused", id)
			return false
		}
	})
	return ph, cid
}
