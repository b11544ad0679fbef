package peer

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
	"github.com/pyrycode/pyrycode-relay/internal/testcert"
)

// Regression tests for deadlines that outlived the operation they were set
// for (issue: an idle pair died on its first lone frame after a heartbeat).
// The timers are short, and every test lets several write timeouts pass
// between writes, with pings in between, as an idle user's connection does.

// serverFrame is one frame read by the client side of a test.
type serverFrame struct {
	op      Opcode
	payload []byte
}

// readServerFrame reads one unmasked frame written by the Conn.
func readServerFrame(r *bufio.Reader) (serverFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return serverFrame{}, err
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return serverFrame{}, err
		}
		n = int(e[0])<<8 | int(e[1])
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return serverFrame{}, err
		}
		n = int(e[4])<<24 | int(e[5])<<16 | int(e[6])<<8 | int(e[7])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{op: Opcode(h[0] & 0x0f), payload: p}, nil
}

// idleClient answers pings with pongs (unless silent) and hands every data
// or close frame to frames.
type idleClient struct {
	nc     net.Conn
	frames chan serverFrame
	pings  chan time.Time
	errc   chan error
}

func startIdleClient(t *testing.T, nc net.Conn, answer bool) *idleClient {
	t.Helper()
	ic := &idleClient{nc: nc, frames: make(chan serverFrame, 64), pings: make(chan time.Time, 256), errc: make(chan error, 1)}
	go func() {
		r := bufio.NewReader(nc)
		for {
			f, err := readServerFrame(r)
			if err != nil {
				ic.errc <- err
				close(ic.frames)
				return
			}
			if f.op == OpPing {
				select {
				case ic.pings <- time.Now():
				default:
				}
				if answer {
					if _, err := nc.Write(clientFrame(true, OpPong, f.payload, [4]byte{1, 2, 3, 4})); err != nil {
						ic.errc <- err
						close(ic.frames)
						return
					}
				}
				continue
			}
			ic.frames <- f
		}
	}()
	return ic
}

func (ic *idleClient) expect(t *testing.T, op Opcode, payload string) {
	t.Helper()
	select {
	case f, ok := <-ic.frames:
		if !ok {
			t.Fatalf("connection ended (%v) before %q arrived", <-ic.errc, payload)
		}
		if f.op != op || string(f.payload) != payload {
			t.Fatalf("got op %d %q, want op %d %q", f.op, f.payload, op, payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%q did not arrive", payload)
	}
}

// waitPings waits until n more pings have arrived.
func (ic *idleClient) waitPings(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-ic.pings:
		case <-time.After(5 * time.Second):
			t.Fatal("no ping")
		}
	}
}

func deadlineOptions() *Options {
	opt := testOptions()
	opt.HeartbeatInterval = 100 * time.Millisecond
	opt.HeartbeatTimeout = 5 * time.Second
	opt.WriteTimeout = 30 * time.Millisecond
	return opt
}

// sendFrame sends payload the way the router does: in a pooled buffer with
// headroom, so that an inline write can put the header in front.
func sendFrame(t *testing.T, c *Conn, payload string, now bool) {
	t.Helper()
	b := bufpool.Get(16 + len(payload))
	n := copy(b.B[16:], payload)
	if err := c.Send(b, b.B[16:16+n], now); err != nil {
		b.Release()
		t.Fatalf("send %q: %v", payload, err)
	}
}

// Every write path after idle periods longer than the write timeout, with
// pings (written by the writer goroutine, each setting its own deadline) in
// between: inline frames, queued frames, and pongs.
func TestWritesAfterIdleOutliveNoDeadline(t *testing.T) {
	for _, tc := range []struct {
		name string
		now  bool
	}{{"inline", true}, {"queued", false}} {
		t.Run(tc.name, func(t *testing.T) {
			c, client, _ := tcpPair(t, deadlineOptions())
			ic := startIdleClient(t, client, true)
			for i := range 4 {
				ic.waitPings(t, 2)                 // the writer wrote pings...
				time.Sleep(4 * c.opt.WriteTimeout) // ...and their deadlines passed
				msg := fmt.Sprintf("lone frame %d", i)
				sendFrame(t, c, msg, tc.now)
				ic.expect(t, OpText, msg)
			}
			if !c.Open() {
				t.Fatalf("connection closed: %+v", c.Info())
			}
		})
	}
}

// A ping from the client after a long pause is answered: the pong gets a
// write deadline of its own.
func TestPongAfterIdle(t *testing.T) {
	c, client, _ := tcpPair(t, deadlineOptions())
	ic := startIdleClient(t, client, true)
	for i := range 3 {
		ic.waitPings(t, 2)
		time.Sleep(4 * c.opt.WriteTimeout)
		p := fmt.Sprintf("p%d", i)
		if _, err := client.Write(clientFrame(true, OpPing, []byte(p), [4]byte{5, 6, 7, 8})); err != nil {
			t.Fatal(err)
		}
		ic.expect(t, OpPong, p)
	}
}

// An inline write the socket took only in part hands the rest to the
// writer; once that has drained and time has passed, the next lone frame
// still goes through.
func TestInlineAfterPartialWriteAndIdle(t *testing.T) {
	opt := deadlineOptions()
	opt.QueueBytes = 64 << 20
	opt.WriteTimeout = 2 * time.Second // the big frames below need it while the client is slow
	c, client, _ := tcpPairBuf(t, opt, 16384)
	client.(*net.TCPConn).SetReadBuffer(16384)
	const size = 200000
	big := make([]byte, size)
	for i := range 3 {
		b := bufpool.Get(16 + size)
		copy(b.B[16:], big)
		if err := c.Send(b, b.B[16:16+size], true); err != nil {
			t.Fatal(err)
		}
		_ = i
	}
	ic := startIdleClient(t, client, true)
	for range 3 {
		select {
		case f := <-ic.frames:
			if len(f.payload) != size {
				t.Fatalf("frame of %d bytes", len(f.payload))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("big frame did not arrive")
		}
	}
	eventually(t, func() bool { return c.QueuedBytes() == 0 })
	// Now shorten nothing: just wait past the writer's last deadline.
	ic.waitPings(t, 2)
	time.Sleep(opt.WriteTimeout + 200*time.Millisecond)
	sendFrame(t, c, "after the partial write", true)
	ic.expect(t, OpText, "after the partial write")
}

// TLS connections have no inline path: every write goes through the writer,
// and every one must still get its own deadline.
func TestTLSWritesAfterIdle(t *testing.T) {
	cert := testcert.New(t, "127.0.0.1")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pool := testcert.Pool(cert)
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			err = nc.(*tls.Conn).Handshake()
		}
		if err != nil {
			close(accepted)
			return
		}
		accepted <- nc
	}()
	client, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, ok := <-accepted
	if !ok {
		t.Fatal("TLS handshake failed")
	}
	c := New(server, nil, deadlineOptions())
	done := make(chan struct{})
	go func() { c.Run(&collect{}); close(done) }()
	defer func() { client.Close(); <-done }()
	ic := startIdleClient(t, client, true)
	for i := range 3 {
		ic.waitPings(t, 2)
		time.Sleep(4 * c.opt.WriteTimeout)
		msg := fmt.Sprintf("tls frame %d", i)
		sendFrame(t, c, msg, true)
		ic.expect(t, OpText, msg)
	}
}

// The heartbeat interval is the ping period, even when the pong timeout is
// longer: pings must not wait for the previous ping's pong deadline.
func TestHeartbeatIntervalIsThePingPeriod(t *testing.T) {
	opt := testOptions()
	opt.HeartbeatInterval = 50 * time.Millisecond
	opt.HeartbeatTimeout = 10 * time.Second
	_, client, _ := tcpPair(t, opt)
	ic := startIdleClient(t, client, true)
	// With the old schedule the second ping came only after the timeout
	// (10 s) had passed; waitPings gives up after 5 s per ping.
	ic.waitPings(t, 5)
}

// A peer that answers no ping is closed once the oldest unanswered ping is
// HeartbeatTimeout old, even though pings keep going out meanwhile.
func TestHeartbeatTimeoutWithShortInterval(t *testing.T) {
	opt := testOptions()
	opt.HeartbeatInterval = 30 * time.Millisecond
	opt.HeartbeatTimeout = 200 * time.Millisecond
	opt.ReasonHeartbeat = Close{1011, "heartbeat timeout"}
	c, client, _ := tcpPair(t, opt)
	ic := startIdleClient(t, client, false)
	select {
	case f, ok := <-ic.frames:
		if !ok {
			t.Fatalf("connection ended without a close frame: %v", <-ic.errc)
		}
		if f.op != OpClose || len(f.payload) < 2 || int(f.payload[0])<<8|int(f.payload[1]) != 1011 {
			t.Fatalf("got op %d %q, want close 1011", f.op, f.payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("silent peer was not closed")
	}
	if n := len(ic.pings); n < 2 {
		t.Fatalf("%d pings before the timeout; the interval should have sent more", n)
	}
	if got := c.Info().Code; got != 1011 {
		t.Fatalf("close info %d", got)
	}
}
