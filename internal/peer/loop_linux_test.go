//go:build linux

package peer

import (
	"bufio"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
	"github.com/pyrycode/pyrycode-relay/internal/evloop"
)

func loopOptions(t *testing.T) *Options {
	t.Helper()
	g := testLoops
	if g == nil {
		var err error
		if g, err = evloop.NewGroup(2); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Close)
	}
	opt := testOptions()
	opt.Loops = g
	return opt
}

// loopPair is tcpPair on an event loop, started with Start.
func loopPair(t *testing.T, opt *Options, h Handler) (*Conn, net.Conn, chan CloseInfo) {
	t.Helper()
	return loopPairKey(t, opt, h, "")
}

// loopPairKey is loopPair with the connection placed by key (PlaceBy)
// unless key is empty.
func loopPairKey(t *testing.T, opt *Options, h Handler, key string) (*Conn, net.Conn, chan CloseInfo) {
	t.Helper()
	server, client := socketPair(t)
	c := New(server, nil, opt)
	if !c.OnLoop() {
		t.Fatal("a TCP connection made with Loops is not on a loop")
	}
	if key != "" {
		c.PlaceBy(key)
	}
	return c, client, startEnded(t, c, h, client)
}

// Idle connections on a loop own no goroutine: opening many adds none.
func TestLoopIdleConnectionsHaveNoGoroutine(t *testing.T) {
	opt := loopOptions(t)
	opt.HeartbeatInterval = time.Hour
	runtime.GC()
	before := runtime.NumGoroutine()
	const n = 200
	clients := make([]net.Conn, 0, n)
	for range n {
		_, client, _ := loopPair(t, opt, &collect{})
		clients = append(clients, client)
	}
	// Each connection echoes one frame, so it is surely being served.
	key := [4]byte{1, 2, 3, 4}
	for _, cl := range clients {
		writeAll(t, cl, clientFrame(true, OpPing, []byte("hi"), key))
		cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := readServerFrame(bufio.NewReader(cl))
		if err != nil || f.op != OpPong || string(f.payload) != "hi" {
			t.Fatalf("pong: %v %v %q", err, f.op, f.payload)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if after := runtime.NumGoroutine(); after > before+n/10 {
		t.Fatalf("%d goroutines for %d idle connections (before: %d)", after-before, n, before)
	}
}

// parkHandler parks each message and delivers it from a goroutine after a
// pause, as the router does when a binary's queue is full.
type parkHandler struct {
	mu   sync.Mutex
	msgs []string
	got  chan struct{}
}

func (h *parkHandler) HandleMessage(c *Conn, _ Opcode, buf *bufpool.Buf, payload []byte) {
	resume := c.Park()
	s := string(payload)
	go func() {
		time.Sleep(5 * time.Millisecond)
		h.mu.Lock()
		h.msgs = append(h.msgs, s)
		h.mu.Unlock()
		buf.Release()
		h.got <- struct{}{}
		resume()
	}()
}

// A parked connection reads nothing more until resumed, then continues
// with the input it had already read, in order.
func TestLoopParkKeepsOrder(t *testing.T) {
	opt := loopOptions(t)
	h := &parkHandler{got: make(chan struct{}, 64)}
	_, client, _ := loopPair(t, opt, h)
	key := [4]byte{5, 6, 7, 8}
	var burst []byte
	want := []string{"a", "b", "c", "d", "e"}
	for _, m := range want {
		burst = append(burst, clientFrame(true, OpText, []byte(m), key)...)
	}
	writeAll(t, client, burst) // one read on the loop: four messages wait
	for range want {
		select {
		case <-h.got:
		case <-time.After(5 * time.Second):
			t.Fatal("a parked message was not delivered")
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, m := range want {
		if h.msgs[i] != m {
			t.Fatalf("delivered %q, want %q", h.msgs, want)
		}
	}
}

// A socket the loop cannot take over (here: closed before Start) ends the
// connection at once, as dropped, and Start still reports its end.
func TestLoopStartFailureEnds(t *testing.T) {
	opt := loopOptions(t)
	server, client := socketPair(t)
	defer client.Close()
	c := New(server, nil, opt)
	server.Close()
	ended := make(chan CloseInfo, 1)
	c.Start(&collect{}, func(ci CloseInfo) { ended <- ci })
	select {
	case ci := <-ended:
		if !ci.Dropped || ci.Code != 1011 {
			t.Fatalf("ended with %+v, want dropped with 1011", ci)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not report the end")
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed")
	}
	if err := c.Send(nil, []byte("x"), true); err != ErrClosed {
		t.Fatalf("Send after the end: %v", err)
	}
}

// forwardTo sends every message it gets to dst without asking for an
// inline write (now=false), as the relay does between connections that
// share a loop.
type forwardTo struct{ dst *Conn }

func (f *forwardTo) HandleMessage(_ *Conn, _ Opcode, buf *bufpool.Buf, payload []byte) {
	if f.dst.Send(buf, payload, false) != nil {
		buf.Release()
	}
}

// PlaceBy puts connections with one key on one loop, and a send that
// leaves its write to the shared loop's end-of-batch flush (now=false) is
// written all the same, in order.
func TestPlaceBySharesALoopAndFlushesAtBatchEnd(t *testing.T) {
	g, err := evloop.NewGroup(4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	opt := testOptions()
	opt.Loops = g
	dst, dstClient, _ := loopPairKey(t, opt, &collect{}, "id-1")
	src, srcClient, _ := loopPairKey(t, opt, &forwardTo{dst: dst}, "id-1")
	if !src.SameLoop(dst) || !dst.SameLoop(src) {
		t.Fatal("two connections placed by one key are on different loops")
	}
	key := [4]byte{9, 8, 7, 6}
	var want []string
	var burst []byte
	for i := range 20 {
		m := string(rune('A' + i))
		want = append(want, m)
		burst = append(burst, clientFrame(true, OpText, []byte(m), key)...)
	}
	writeAll(t, srcClient, burst[:len(burst)/2])
	writeAll(t, srcClient, burst[len(burst)/2:])
	r := bufio.NewReader(dstClient)
	dstClient.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, m := range want {
		f, err := readServerFrame(r)
		if err != nil {
			t.Fatalf("waiting for %q: %v", m, err)
		}
		if f.op != OpText || string(f.payload) != m {
			t.Fatalf("got %v %q, want %q", f.op, f.payload, m)
		}
	}
}

// Bytes the client sent right behind its request (read by the handshake)
// are handled on the loop before anything the socket brings, in order.
func TestLoopPendingBytesAreReadFirst(t *testing.T) {
	key := [4]byte{5, 6, 7, 8}
	opt := loopOptions(t)
	server, client := socketPair(t)
	defer client.Close()
	c := New(server, clientFrame(true, OpText, []byte(`"early"`), key), opt)
	if !c.OnLoop() {
		t.Fatal("a TCP connection made with Loops is not on a loop")
	}
	h := &collect{}
	ended := make(chan CloseInfo, 1)
	c.Start(h, func(ci CloseInfo) { ended <- ci })
	client.Write(clientFrame(true, OpText, []byte(`"late"`), key))
	client.Write(clientFrame(true, OpClose, []byte{0x03, 0xE8}, key))
	go func() { _, _ = io.Copy(io.Discard, client) }()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("connection did not end")
	}
	if len(h.msgs) != 2 || string(h.msgs[0]) != `"early"` || string(h.msgs[1]) != `"late"` {
		t.Fatalf("msgs %q", h.msgs)
	}
}

// Connections that end give their loop registration back, whichever way
// they end: a loop keeps no handler for a closed socket.
func TestLoopEndedConnectionsAreUnregistered(t *testing.T) {
	opt := loopOptions(t)
	g, err := evloop.NewGroup(1) // a group of its own: nothing else counts
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	opt.Loops = g
	count := func() int {
		ch := make(chan int, 1)
		l := g.Pick()
		l.Post(taskFunc(func() { ch <- l.Count() }))
		return <-ch
	}
	for i := range 20 {
		c, client, ended := loopPair(t, opt, &collect{})
		if i%2 == 0 {
			client.Close() // the peer hangs up
		} else {
			c.Close(Close{Code: 1000}, false) // we close; the client answers
			go func() { _, _ = io.Copy(io.Discard, client) }()
			key := [4]byte{1, 2, 3, 4}
			client.Write(clientFrame(true, OpClose, []byte{0x03, 0xE8}, key))
		}
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("connection did not end")
		}
	}
	if n := count(); n != 0 {
		t.Fatalf("%d sockets still registered with the loop after every connection ended", n)
	}
}

// queueCaps reads c's queue and write batch capacities on its loop.
func queueCaps(t *testing.T, c *Conn) (q, wq int) {
	t.Helper()
	done := make(chan struct{})
	if !c.Defer(taskFunc(func() {
		c.mu.Lock()
		q = cap(c.q)
		c.mu.Unlock()
		wq = cap(c.ls.wq)
		close(done)
	})) {
		t.Fatal("not on a loop")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not run the task")
	}
	return q, wq
}

// A connection that queued several frames at once keeps its queue storage
// once drained (it would otherwise grow it afresh on every pass), and
// gives it back at its next heartbeat.
func TestLoopBusyQueueKeptUntilHeartbeat(t *testing.T) {
	g, err := evloop.NewGroup(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	opt := testOptions()
	opt.Loops = g
	opt.HeartbeatInterval = 300 * time.Millisecond
	opt.HeartbeatTimeout = time.Minute
	dst, dstClient, _ := loopPairKey(t, opt, &collect{}, "id-1")
	_, srcClient, _ := loopPairKey(t, opt, &forwardTo{dst: dst}, "id-1")
	key := [4]byte{1, 3, 5, 7}
	var burst []byte
	for i := range 20 {
		burst = append(burst, clientFrame(true, OpText, []byte{byte('a' + i)}, key)...)
	}
	writeAll(t, srcClient, burst)
	r := bufio.NewReader(dstClient)
	dstClient.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got := 0; got < 20; {
		f, err := readServerFrame(r)
		if err != nil {
			t.Fatalf("after %d frames: %v", got, err)
		}
		if f.op == OpText {
			got++
		}
	}
	if q, wq := queueCaps(t, dst); q+wq < keepQueueMin {
		t.Fatalf("drained after a burst: queue capacities %d and %d, want the storage kept", q, wq)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		q, wq := queueCaps(t, dst)
		if q == 0 && wq == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue capacities %d and %d after heartbeats, want none", q, wq)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Idle past another heartbeat, then a burst again: all of it arrives,
	// in order, on the same connection.
	time.Sleep(2 * opt.HeartbeatInterval)
	writeAll(t, srcClient, burst)
	dstClient.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got := 0; got < 20; {
		f, err := readServerFrame(r)
		if err != nil {
			t.Fatalf("second burst, after %d frames: %v", got, err)
		}
		if f.op == OpText {
			if want := byte('a' + got); len(f.payload) != 1 || f.payload[0] != want {
				t.Fatalf("second burst: frame %d is %q, want %q", got, f.payload, want)
			}
			got++
		}
	}
}
