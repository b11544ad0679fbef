package peer

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
)

// socketPair returns the two ends of a loopback TCP connection.
func socketPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if client, err = net.Dial("tcp", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	return server, client
}

// tcpPair returns a Conn running over loopback TCP and the client's socket.
func tcpPair(t *testing.T, opt *Options) (*Conn, net.Conn, chan struct{}) {
	t.Helper()
	return tcpPairBuf(t, opt, 0)
}

// tcpPairBuf is tcpPair with the server socket's send buffer set to sndbuf
// (when not 0) before the Conn takes it over.
func tcpPairBuf(t *testing.T, opt *Options, sndbuf int) (*Conn, net.Conn, chan struct{}) {
	t.Helper()
	server, client := socketPair(t)
	if sndbuf > 0 {
		server.(*net.TCPConn).SetWriteBuffer(sndbuf)
	}
	c := New(server, nil, opt)
	done := make(chan struct{})
	go func() { c.Run(&collect{}); close(done) }()
	t.Cleanup(func() {
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not end")
		}
	})
	return c, client, done
}

func TestQueueChargesWholeBuffers(t *testing.T) {
	opt := testOptions()
	opt.QueueBytes = 10 << 10
	c, client, _ := tcpPair(t, opt)
	_ = client
	// Hold the writer back by queueing while it cannot drain: charge is
	// checked at admission, so look at the numbers Send decides on.
	c.mu.Lock()
	c.writing = true // pretend a writer runs so nothing is written yet
	c.mu.Unlock()
	var sent int
	for range 100 {
		b := bufpool.Get(1) // a 512-byte buffer holding a one-byte frame
		if err := c.Send(b, b.B[:1], false); err != nil {
			b.Release()
			break
		}
		sent++
	}
	release := func() {
		c.mu.Lock()
		c.writing = false
		c.wakeWriterLocked()
		c.mu.Unlock()
	}
	if want := (10 << 10) / (512 + itemOverhead); sent != want {
		release()
		t.Fatalf("admitted %d one-byte frames in 512-byte buffers, want %d", sent, want)
	}
	if got := c.QueuedBytes(); got != sent*(512+itemOverhead) {
		release()
		t.Fatalf("queued %d", got)
	}
	release()
}

func TestPingFloodDoesNotGrowQueue(t *testing.T) {
	opt := testOptions()
	c, client, _ := tcpPair(t, opt)
	key := [4]byte{1, 2, 3, 4}
	ping := clientFrame(true, OpPing, make([]byte, 125), key)
	var burst []byte
	for range 256 {
		burst = append(burst, ping...)
	}
	// The client never reads: once the socket buffers fill, pongs wait.
	maxCtl := 0
	for range 200 {
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := client.Write(burst); err != nil {
			break
		}
		c.mu.Lock()
		maxCtl = max(maxCtl, len(c.ctl))
		c.mu.Unlock()
	}
	if maxCtl > 2 {
		t.Fatalf("%d control frames waiting; pongs must coalesce", maxCtl)
	}
}

// Inline writes that the socket takes only in part leave the rest at the
// head of the queue: every frame must still arrive whole and in order.
func TestInlinePartialWritesKeepFramesWhole(t *testing.T) {
	opt := testOptions()
	opt.QueueBytes = 64 << 20
	c, client, _ := tcpPairBuf(t, opt, 16384)
	client.(*net.TCPConn).SetReadBuffer(16384)
	const frames, size = 16, 20000
	partialBefore := inlinePartial.Load()
	go func() {
		for i := range frames {
			b := bufpool.Get(16 + size)
			data := b.B[16 : 16+size]
			for k := range data {
				data[k] = byte(i + k)
			}
			if err := c.Send(b, data, true); err != nil {
				b.Release()
				return
			}
		}
	}()
	hdr := make([]byte, 4)
	payload := make([]byte, size)
	for i := range frames {
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(client, hdr); err != nil {
			t.Fatalf("frame %d header: %v", i, err)
		}
		if hdr[0] != 0x81 || hdr[1] != 126 || int(hdr[2])<<8|int(hdr[3]) != size {
			t.Fatalf("frame %d header %x", i, hdr)
		}
		if _, err := io.ReadFull(client, payload); err != nil {
			t.Fatalf("frame %d payload: %v", i, err)
		}
		for k, v := range payload {
			if v != byte(i+k) {
				t.Fatalf("frame %d byte %d = %d", i, k, v)
			}
		}
	}
	eventually(t, func() bool { return c.QueuedBytes() == 0 })
	if inlinePartial.Load() == partialBefore {
		t.Log("no inline write was partial this time (the socket took every frame whole)")
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// A control frame must never be written inside a frame that an inline
// write left half-sent.
func TestControlFrameWaitsForPartialFrame(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	c := New(server, nil, testOptions())
	c.mu.Lock()
	c.writing = true // hold the writer while the state is set up
	c.q = append(c.q, item{op: opRaw, data: []byte("rest-of-frame")})
	c.controlLocked(OpPing, nil)
	c.writing = false
	c.wakeWriterLocked()
	c.mu.Unlock()
	want := append([]byte("rest-of-frame"), 0x89, 0x00)
	got := make([]byte, len(want))
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("wrote %q, want %q", got, want)
	}
	server.Close()
}

// Pings that arrive while a pong is still waiting to be written share one
// pong, carrying the latest ping's payload (RFC 6455 §5.5.3). Pinned
// because it is visible on the wire: ten pings back to back get one pong.
func TestPingsCoalesceIntoLatestPong(t *testing.T) {
	c, client, _ := tcpPair(t, testOptions())
	c.HoldWrites() // nothing is written until the reader has seen every ping
	key := [4]byte{8, 6, 4, 2}
	var burst []byte
	for i := range 10 {
		burst = append(burst, clientFrame(true, OpPing, []byte{'p', byte('0' + i)}, key)...)
	}
	if _, err := client.Write(burst); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.ctl) == 1 && string(c.ctl[0].data) == "p9"
	})
	sendFrame(t, c, "marker", false) // queued behind the pong
	c.ReleaseWrites()
	br := bufio.NewReader(client)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range []serverFrame{{OpPong, []byte("p9")}, {OpText, []byte("marker")}} {
		f, err := readServerFrame(br)
		if err != nil {
			t.Fatal(err)
		}
		if f.op != want.op || !bytes.Equal(f.payload, want.payload) {
			t.Fatalf("got op %d %q, want op %d %q", f.op, f.payload, want.op, want.payload)
		}
	}
}
