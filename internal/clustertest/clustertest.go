// Package clustertest runs a relay cluster inside a test: a NATS server
// with JetStream on a random loopback port and relay nodes on it, each
// served on its own 127.0.0.1 port. It is for tests outside
// internal/cluster (the load tool, the load balancer examples).
package clustertest

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/pyrycode/pyrycode-relay/internal/cluster"
	"github.com/pyrycode/pyrycode-relay/internal/front"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

// StartNATS runs a NATS server with JetStream on a random loopback port
// and a temporary store; it stops at the test's end. It returns its URL.
func StartNATS(t testing.TB) string {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	t.Cleanup(ns.Shutdown)
	return ns.ClientURL()
}

// Node is one relay node of a test cluster.
type Node struct {
	Node *cluster.Node
	Srv  *relay.Server
	HS   *httptest.Server
	URL  string // ws://127.0.0.1:port
	Addr string // 127.0.0.1:port

	once sync.Once
	t    testing.TB
}

// StartNode starts a relay node of cluster name on the NATS server at
// natsURL, with relay configuration rc and a discarded log. It is drained
// (as on SIGTERM) at the test's end.
func StartNode(t testing.TB, natsURL, name string, rc relay.Config) *Node {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := cluster.Start(cluster.Config{URLs: natsURL, Name: name, Grace: rc.Grace, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if rc.CloseWait == 0 {
		rc.CloseWait = 200 * time.Millisecond
	}
	rc.NodeID = n.ID()
	srv := relay.New(rc, log, relay.WithDirectory(n), relay.WithClusterHealth(n.Health))
	hs := httptest.NewUnstartedServer(srv)
	hs.Listener = front.New(hs.Listener, hs.Config, relay.IsUpgrade) // as the relay binary serves
	hs.Start()
	tn := &Node{Node: n, Srv: srv, HS: hs, URL: "ws" + strings.TrimPrefix(hs.URL, "http"),
		Addr: strings.TrimPrefix(hs.URL, "http://"), t: t}
	t.Cleanup(tn.Stop)
	return tn
}

// Stop drains the node as SIGTERM does; it is safe to call twice.
func (tn *Node) Stop() {
	tn.once.Do(func() {
		tn.Node.Leave()
		tn.HS.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tn.Srv.Shutdown(ctx); err != nil {
			tn.t.Errorf("shutdown: %v", err)
		}
		tn.Node.Close()
	})
}

// CrossNode returns how many cross-node messages this node has received
// toward its binaries and toward its phones.
func (tn *Node) CrossNode() (toBinary, toPhone int64) {
	s := tn.Node.Stats()
	return s.MsgsIn[0].Load(), s.MsgsIn[1].Load()
}
