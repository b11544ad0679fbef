package cluster

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

// The phone's node loses NATS for a moment (its server of a NATS cluster
// goes; it is back before anyone takes it for gone). The phone is closed
// 1011, and once NATS is back the owner is told: its binary gets a 1011 close
// notice and the phone's slot under the 4429 cap is free again.
func TestRegressionPhoneNodeBlipLeaksPhone(t *testing.T) {
	ns := startNATS(t)
	cfg := testConfig()
	cfg.MaxPhones = 1
	a := startNode(t, ns.ClientURL(), "r1", cfg)
	b := startNode(t, ns.ClientURL(), "r1", cfg)
	bin := dialBinary(t, a, "blip")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	ph := phone(t, b, "blip")
	cid := pair(t, ph, bin, `{"x":1}`)
	if err := b.node.nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	ph.closed(t, 1011, "relay node unavailable")
	eventually(t, "b back", func() bool { return b.node.Connected() })
	if got, want := bin.next(t), `{"conn_id":"`+cid+`","close_code":1011}`; got != want {
		t.Fatalf("binary got %q, want %q", got, want)
	}
	a.node.mu.Lock()
	left := a.node.remote.size()
	a.node.mu.Unlock()
	if left != 0 {
		t.Fatalf("owner still has %d remote phone(s) registered", left)
	}
	// No phone is connected any more: a new one must be accepted.
	pair(t, phone(t, a, "blip"), bin, `{"new":1}`)
}

// A node restarted with the same --node-id before DeadAfter has passed (a
// supervisor restarting it at once) is seen as a new process: owners
// elsewhere forget the phones that died with the old one (their binaries
// get a 1001 notice) and free their slots.
func TestRegressionSameNodeIDRestartLeaks(t *testing.T) {
	ns := startNATS(t)
	cfg := testConfig()
	cfg.MaxPhones = 1
	a := startNode(t, ns.ClientURL(), "r2", cfg)
	mk := func() *testNode {
		return startNodeCfg(t, Config{URLs: ns.ClientURL(), Name: "r2", NodeID: "fixed", Grace: cfg.Grace,
			Heartbeat: 200 * time.Millisecond, DeadAfter: 1500 * time.Millisecond, RequestTimeout: time.Second, Log: testLog}, cfg, testLog)
	}
	x := mk()
	bin := dialBinary(t, a, "restart")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	ph := phone(t, x, "restart")
	cid := pair(t, ph, bin, `{"x":1}`)
	x.crash()
	mk() // same node id, back within DeadAfter
	if got, want := bin.next(t), `{"conn_id":"`+cid+`","close_code":1001}`; got != want {
		t.Fatalf("binary got %q, want %q", got, want)
	}
	pair(t, phone(t, a, "restart"), bin, `{"new":1}`)
}

// A cross-node phone closed for "phone backlog full" (its binary's queue is
// over budget) is closed like any phone the relay closes: its binary gets a
// close notice with the code used (1011).
func TestRegressionBacklogCloseNoNotice(t *testing.T) {
	ns := startNATS(t)
	cfg := testConfig()
	cfg.BinaryQueueBytes = 32 << 10
	cfg.MaxFrameBytes = 16 << 10
	a := startNode(t, ns.ClientURL(), "r3", cfg)
	b := startNode(t, ns.ClientURL(), "r3", cfg)
	// The binary does not read while the phone floods: once the socket
	// buffers are full, its queue is over budget.
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	bc, _, err := d.Dial(a.url+"/v1/server", http.Header{wire.HeaderServer: {"slowbin"}, wire.HeaderVersion: {"1"}, "User-Agent": {"t"}})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	ph := phone(t, b, "slowbin")
	ph.send(t, `{"hello":1}`)
	_, first, err := bc.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	cid := strings.TrimPrefix(string(first), `{"conn_id":"`)
	cid = cid[:strings.IndexByte(cid, '"')]
	big := `{"pad":"` + strings.Repeat("y", 12000) + `"}`
	for i := 0; i < 2000 && !ph.gone(); i++ {
		if ph.c.WriteMessage(websocket.TextMessage, []byte(big)) != nil {
			break
		}
	}
	ph.closed(t, 1011, "phone backlog full")
	want := `{"conn_id":"` + cid + `","close_code":1011}`
	for i := 0; ; i++ {
		bc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, m, err := bc.ReadMessage()
		if err != nil {
			t.Fatalf("binary never got %s (%v) after %d messages", want, err, i)
		}
		if string(m) == want {
			return
		}
	}
}

// Two claims for an id in its grace period on a third node, on two nodes at
// once, with the window between "free" and the swap stretched on one of
// them: exactly one binary holds the id, the other gets 4409. Never two
// owners (each node holds the id before it swaps, and a lost swap undoes
// the hold).
func TestRegressionTwoOwners(t *testing.T) {
	ns := startNATS(t)
	a := startNode(t, ns.ClientURL(), "r4", testConfig())
	b := startNode(t, ns.ClientURL(), "r4", testConfig())
	c := startNode(t, ns.ClientURL(), "r4", testConfig())
	old := dialBinary(t, a, "dup")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	old.c.Close()
	eventually(t, "grace on a", func() bool { _, g := a.node.Counts(); return g == 1 })
	testHookBeforeSwap = func(n *Node) {
		if n == b.node {
			time.Sleep(500 * time.Millisecond)
		}
	}
	defer func() { testHookBeforeSwap = nil }()
	done := make(chan *client)
	go func() { done <- dialBinary(t, b, "dup") }()
	time.Sleep(150 * time.Millisecond)
	binC := dialBinary(t, c, "dup")
	binB := <-done
	eventually(t, "one claim refused", func() bool { return binB.gone() || binC.gone() })
	loser, winner := binB, binC
	if binC.gone() {
		loser, winner = binC, binB
	}
	loser.closed(t, 4409, "server-id already claimed")
	winner.quiet(t, 300*time.Millisecond)
	lb, _ := b.node.Counts()
	lc, _ := c.node.Counts()
	if lb+lc != 1 {
		t.Fatalf("ids held: b=%d c=%d", lb, lc)
	}
	for _, node := range []*testNode{a, b, c} {
		pair(t, phone(t, node, "dup"), winner, `{"to":"winner"}`)
	}
}

// A phone registered with an owner this node has not heard from yet (a
// node just started, its first phone arriving before the owner's first
// heartbeat) makes the owner's entry without an instance. The owner's
// first heartbeat after that is its first word, not a restart: it must
// not orphan the phone (which then got 4404 on its next frame; found as
// a rare failure of TestBatchGap under load).
func TestRegressionFirstHeartbeatAfterRegistrationIsNoRestart(t *testing.T) {
	ns := startNATS(t)
	a := startNode(t, ns.ClientURL(), "r5", testConfig())
	b := startNode(t, ns.ClientURL(), "r5", testConfig())
	bin := dialBinary(t, a, "first-word")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	ph := phone(t, b, "first-word")
	cid := pair(t, ph, bin, `{"x":1}`)

	// b's entry for a as a registration makes it when b has heard nothing
	// from a, then a's next heartbeat.
	b.node.mu.Lock()
	b.node.peers[a.node.ID()] = peerState{seen: time.Now()}
	b.node.mu.Unlock()
	lost0 := b.node.stats.NodesLost.Load()
	b.node.onRecord(&nats.Msg{}, enc{kHeartbeat}.str(a.node.ID()).str(a.node.instance), true)
	if got := b.node.stats.NodesLost.Load() - lost0; got != 0 {
		t.Fatalf("the owner's first heartbeat counted as %d lost node(s)", got)
	}
	ph.send(t, `{"x":2}`)
	if got, want := bin.next(t), env(cid, `{"x":2}`); got != want {
		t.Fatalf("binary got %q, want %q (phone: %v)", got, want, ph.err)
	}

	// A different instance after a known one is still a restart.
	b.node.onRecord(&nats.Msg{}, enc{kHeartbeat}.str(a.node.ID()).str("another-process"), true)
	if got := b.node.stats.NodesLost.Load() - lost0; got != 1 {
		t.Fatalf("a new instance counted as %d lost node(s), want 1", got)
	}
}

// leaderGet, the read a phone's 4404 waits for when a replica did not
// have its id: an entry, none, a deleted and a purged one.
func TestLeaderGet(t *testing.T) {
	ns := startNATS(t)
	a := startNode(t, ns.ClientURL(), "r6", testConfig())
	dialBinary(t, a, "held")
	eventually(t, "claim written", func() bool { return a.node.ownedRev("held") != 0 })
	if owner, found, err := a.node.leaderGet("held"); err != nil || !found || owner != a.node.ID() {
		t.Fatalf("held: %q %v %v", owner, found, err)
	}
	if owner, found, err := a.node.leaderGet("never"); err != nil || found {
		t.Fatalf("never claimed: %q %v %v", owner, found, err)
	}
	for _, op := range []string{"delete", "purge"} {
		id := "gone-" + op
		if _, err := a.node.kv.Put(t.Context(), key(id), []byte("x")); err != nil {
			t.Fatal(err)
		}
		var err error
		if op == "delete" {
			err = a.node.kv.Delete(t.Context(), key(id))
		} else {
			err = a.node.kv.Purge(t.Context(), key(id))
		}
		if err != nil {
			t.Fatal(err)
		}
		if owner, found, err := a.node.leaderGet(id); err != nil || found {
			t.Fatalf("%s: %q %v %v", op, owner, found, err)
		}
	}
}
