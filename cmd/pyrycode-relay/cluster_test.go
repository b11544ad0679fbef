package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
)

func startNATS(t *testing.T) string {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Username: "relay", Password: "s3cret-pw",
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	t.Cleanup(ns.Shutdown)
	return strings.Replace(ns.ClientURL(), "nats://", "nats://relay:s3cret-pw@", 1)
}

// Two relays pointed at one NATS are one relay: a phone on one reaches a
// binary on the other; /healthz and the status page show the node and NATS
// state; the NATS credentials never reach the log.
func TestClusterModeTwoRelays(t *testing.T) {
	url := startNATS(t)
	a := startRun(t, "--insecure-listen", "127.0.0.1:0", "--nats-url", url, "--cluster-name", "cmdtest", "--node-id", "node-a")
	b := startRun(t, "--insecure-listen", "127.0.0.1:0", "--nats-url", url, "--cluster-name", "cmdtest")
	addrA, addrB := a.addrs["insecure"].String(), b.addrs["insecure"].String()

	resp, err := http.Get("http://" + addrA + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Cluster struct{ Node, NATS string } `json:"cluster"`
	}
	json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if resp.StatusCode != 200 || h.Cluster.Node != "node-a" || h.Cluster.NATS != "connected" {
		t.Fatalf("healthz %d %+v", resp.StatusCode, h)
	}
	resp, err = http.Get("http://" + a.addrs["metrics"].String() + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(body.String(), `"cluster":{"nats":"connected","node":"node-a"}`) {
		t.Fatalf("status.json: %s", body.String())
	}

	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	bin := dialWS(t, d, "ws://"+addrA+"/v1/server", binHeaders("cmd-cluster"))
	waitHealth(t, http.DefaultClient, "http://"+addrA+"/healthz", 1, 0)
	ph := dialWS(t, d, "ws://"+addrB+"/v1/client", phoneHeaders("cmd-cluster"))
	ph.WriteMessage(websocket.TextMessage, []byte(`{"v":2,"hello":"across"}`))
	bin.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := bin.ReadMessage()
	if err != nil || !strings.HasPrefix(string(msg), `{"conn_id":"c-`) || !strings.HasSuffix(string(msg), `","frame":{"v":2,"hello":"across"}}`) {
		t.Fatalf("binary got %q, %v", msg, err)
	}
	connID := strings.TrimPrefix(string(msg), `{"conn_id":"`)
	connID = connID[:strings.IndexByte(connID, '"')]
	bin.WriteMessage(websocket.TextMessage, []byte(`{"conn_id":"`+connID+`","frame":{"back":true}}`))
	ph.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := ph.ReadMessage(); err != nil || string(msg) != `{"back":true}` {
		t.Fatalf("phone got %q, %v", msg, err)
	}
	resp, err = http.Get("http://" + a.addrs["metrics"].String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body.Reset()
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`pyrycode_relay_cluster_nats_connected 1`, `pyrycode_relay_cluster_messages_received_total{direction="to_binary"} 1`,
		`pyrycode_relay_cluster_claims_total{outcome="fresh"} 1`} {
		if !strings.Contains(body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, p := range []*relayProc{a, b} {
		if code := p.stop(t); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if log := p.log.String(); strings.Contains(log, "s3cret-pw") || !strings.Contains(log, `"msg":"cluster_joined"`) {
			t.Fatalf("log leaks the NATS password or lacks cluster_joined: %s", log)
		}
	}
}

// A NATS that cannot be reached at start is a failure to start (exit 1,
// one line, no credentials).
func TestClusterModeNATSUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var stderr syncBuf
	code := run(t.Context(), []string{"--insecure-listen", "127.0.0.1:0", "--metrics-listen", "", "--nats-url", "nats://u:hunter2@" + addr},
		noenv, &stderr, &stderr, nil)
	if code != exitFailed || strings.Contains(stderr.String(), "hunter2") || !strings.Contains(stderr.String(), "NATS") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}
