// Package deploy holds the example configurations of deploy/ and tests
// that run them against real relays.
package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pyrycode/pyrycode-relay/internal/clustertest"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

// nginxPath finds Debian's nginx: on PATH, or where the package puts it.
func nginxPath() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if fi, err := os.Stat("/usr/sbin/nginx"); err == nil && fi.Mode().IsRegular() {
		return "/usr/sbin/nginx"
	}
	return ""
}

// nginxConf is the test's nginx: one process in the foreground, every path
// in the prefix directory (no root needed), and the upstream and proxy
// settings of deploy/nginx/pyrycode-relay-cluster.conf over the given
// relays, without TLS.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;

    map $http_upgrade $pyrycode_relay_connection {
        default upgrade;
        ''      '';
    }
    upstream pyrycode_relay_cluster {
%[2]s        keepalive 8;
    }
    server {
        listen %[3]s;
        client_max_body_size 1k;
        location / {
            proxy_pass http://pyrycode_relay_cluster;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $pyrycode_relay_connection;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
            proxy_connect_timeout 5s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
`

// startNginx runs nginx in front of the upstream addresses and returns the
// address it listens on. It is killed at the test's end.
func startNginx(t *testing.T, bin string, upstreams ...string) string {
	t.Helper()
	var servers strings.Builder
	for _, u := range upstreams {
		fmt.Fprintf(&servers, "        server %s max_fails=1 fail_timeout=10s;\n", u)
	}
	prefix := t.TempDir()
	var lastErr error
	for range 5 { // the free port found may be taken before nginx binds it
		addr := freeAddr(t)
		conf := filepath.Join(prefix, "nginx.conf")
		if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, prefix, servers.String(), addr), 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		cmd := exec.Command(bin, "-p", prefix, "-c", conf, "-e", filepath.Join(prefix, "error.log"))
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting nginx: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := waitListening(addr, exited); err != nil {
			logs, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			lastErr = fmt.Errorf("%v\n%s%s", err, out.String(), logs)
			_ = cmd.Process.Kill()
			<-exited
			continue
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		return addr
	}
	t.Fatalf("nginx did not start: %v", lastErr)
	return ""
}

// freeAddr returns a 127.0.0.1 address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitListening waits (at most 20 s) until addr accepts connections, or
// the process exits.
func waitListening(addr string, exited <-chan error) error {
	for range 200 {
		select {
		case err := <-exited:
			return fmt.Errorf("nginx exited: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("nginx is not listening after 20 s")
}

// waitCount waits (at most 10 s) until cond holds.
func waitCount(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func dial(t *testing.T, url string, h http.Header) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial(url, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	op, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if op != websocket.TextMessage {
		t.Fatalf("message of type %d, want text", op)
	}
	return string(msg)
}

func write(t *testing.T, c *websocket.Conn, s string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// Debian's nginx, configured as deploy/nginx/pyrycode-relay-cluster.conf
// (round robin over two relay nodes, no stickiness), in front of a cluster
// on one NATS: a binary and a phone dialled through the same nginx address
// land on different nodes, and frames go both ways between them.
func TestNginxInFrontOfCluster(t *testing.T) {
	bin := nginxPath()
	if bin == "" {
		t.Skip("nginx not found on PATH or at /usr/sbin/nginx (Debian: apt-get install nginx); skipping the load balancer test")
	}
	nats := clustertest.StartNATS(t)
	nodes := []*clustertest.Node{
		clustertest.StartNode(t, nats, "nginxtest", relay.Config{}),
		clustertest.StartNode(t, nats, "nginxtest", relay.Config{}),
	}
	lb := "ws://" + startNginx(t, bin, nodes[0].Addr, nodes[1].Addr)

	const id = "nginx-cluster-test"
	b := dial(t, lb+"/v1/server", http.Header{wire.HeaderServer: {id}, wire.HeaderVersion: {"1"}, "User-Agent": {"deploy-test"}})
	binNode := -1
	waitCount(t, "the binary to register on a node", func() bool {
		for i, n := range nodes {
			if bs, _ := n.Srv.Counts(); bs == 1 {
				binNode = i
				return true
			}
		}
		return false
	})
	other := nodes[1-binNode]

	// Round robin sends the next connection to the other node; dial phones
	// (leaving those that land with the binary open and silent) until one
	// does.
	var ph *websocket.Conn
	for attempt := 0; ph == nil; attempt++ {
		if attempt == 10 {
			t.Fatal("no phone landed on the node without the binary in 10 dials: nginx is not spreading connections")
		}
		_, before := other.Srv.Counts()
		_, beforeWithBin := nodes[binNode].Srv.Counts()
		c := dial(t, lb+"/v1/client", http.Header{wire.HeaderServer: {id}, wire.HeaderToken: {"tok"}, "User-Agent": {"deploy-test"}})
		waitCount(t, "the phone to register on a node", func() bool {
			_, n := other.Srv.Counts()
			_, m := nodes[binNode].Srv.Counts()
			if n > before {
				ph = c
			}
			return n > before || m > beforeWithBin
		})
	}

	// Phone to binary and back.
	write(t, ph, `{"v":2,"hello":"through nginx"}`)
	env := read(t, b)
	if !strings.HasPrefix(env, `{"conn_id":"`) || !strings.HasSuffix(env, `","frame":{"v":2,"hello":"through nginx"}}`) {
		t.Fatalf("binary got %q", env)
	}
	connID := strings.TrimPrefix(env, `{"conn_id":"`)
	connID = connID[:strings.IndexByte(connID, '"')]
	write(t, b, `{"conn_id":"`+connID+`","frame":{"echo":1}}`)
	if got := read(t, ph); got != `{"echo":1}` {
		t.Fatalf("phone got %q", got)
	}
	// Binary first, the phone answers.
	write(t, b, `{"conn_id":"`+connID+`","frame":{"ask":2}}`)
	if got := read(t, ph); got != `{"ask":2}` {
		t.Fatalf("phone got %q", got)
	}
	write(t, ph, `{"answer":2}`)
	if got := read(t, b); got != `{"conn_id":"`+connID+`","frame":{"answer":2}}` {
		t.Fatalf("binary got %q", got)
	}

	// The frames crossed NATS: they were not served by one node.
	if toBin, _ := nodes[binNode].CrossNode(); toBin < 2 {
		t.Errorf("node with the binary received %d cross-node frames for it, want 2", toBin)
	}
	if _, toPhone := other.CrossNode(); toPhone < 2 {
		t.Errorf("node with the phone received %d cross-node frames for it, want 2", toPhone)
	}
}
