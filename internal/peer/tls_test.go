package peer

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
	"github.com/pyrycode/pyrycode-relay/internal/evloop"
	"github.com/pyrycode/pyrycode-relay/internal/testcert"
)

// TLS connections accepted through NewTLSListener, on both I/O paths: a
// reader goroutine, and (where there are event loops) the loop, with
// crypto/tls fed by it. Real TLS dials on 127.0.0.1.

// forEachIO runs f once per I/O path with options for it.
func forEachIO(t *testing.T, f func(t *testing.T, opt *Options)) {
	t.Run("goroutine", func(t *testing.T) {
		opt := *testOptions()
		opt.Loops = nil
		f(t, &opt)
	})
	g, err := evloop.NewGroup(2)
	if err != nil {
		return // no event loop on this system
	}
	t.Cleanup(g.Close)
	t.Run("loop", func(t *testing.T) {
		opt := *testOptions()
		opt.Loops = g
		f(t, &opt)
	})
}

// echo sends every message back.
type echo struct{}

func (echo) HandleMessage(c *Conn, _ Opcode, buf *bufpool.Buf, payload []byte) {
	if c.Send(buf, payload, !c.Buffered()) != nil {
		buf.Release()
	}
}

// tlsPair accepts one TLS connection through NewTLSListener, completes
// the handshake as net/http would (on the accepting goroutine, before the
// Conn is made) and starts it with h.
func tlsPair(t *testing.T, opt *Options, h Handler) (*Conn, *tls.Conn, chan CloseInfo) {
	t.Helper()
	cert := testcert.New(t, "127.0.0.1")
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewTLSListener(tcp, &tls.Config{Certificates: []tls.Certificate{cert}})
	defer ln.Close()
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
	client, err := tls.Dial("tcp", tcp.Addr().String(), &tls.Config{RootCAs: testcert.Pool(cert), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("TLS handshake failed")
	}
	c := New(server, nil, opt)
	if c.OnLoop() != (opt.Loops != nil) {
		t.Fatalf("on a loop: %v, with loops: %v", c.OnLoop(), opt.Loops != nil)
	}
	return c, client, startEnded(t, c, h, client)
}

// startEnded starts c with h and returns the channel its end is reported
// on; when the test ends, client is closed and c must end within 5 s.
func startEnded(t *testing.T, c *Conn, h Handler, client net.Conn) chan CloseInfo {
	t.Helper()
	ended := make(chan CloseInfo, 1)
	c.Start(h, func(ci CloseInfo) { ended <- ci })
	t.Cleanup(func() {
		client.Close()
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Error("connection did not end")
		}
	})
	return ended
}

func waitEnd(t *testing.T, ended chan CloseInfo) CloseInfo {
	t.Helper()
	select {
	case ci := <-ended:
		return ci
	case <-time.After(5 * time.Second):
		t.Fatal("connection did not end")
		return CloseInfo{}
	}
}

// Idle past several heartbeats and write timeouts, then lone frames both
// ways: the client's is echoed, the relay's arrives.
func TestTLSIdleThenLoneFrames(t *testing.T) {
	forEachIO(t, func(t *testing.T, opt *Options) {
		opt.HeartbeatInterval = 100 * time.Millisecond
		opt.HeartbeatTimeout = 5 * time.Second
		opt.WriteTimeout = 30 * time.Millisecond
		c, client, _ := tlsPair(t, opt, echo{})
		ic := startIdleClient(t, client, true)
		for i := range 3 {
			ic.waitPings(t, 2)
			time.Sleep(4 * opt.WriteTimeout)
			msg := fmt.Sprintf("lone frame %d", i)
			writeAll(t, client, clientFrame(true, OpText, []byte(msg), [4]byte{9, 8, 7, 6}))
			ic.expect(t, OpText, msg)
			msg = fmt.Sprintf("relay frame %d", i)
			sendFrame(t, c, msg, true)
			ic.expect(t, OpText, msg)
		}
	})
}

// The close handshake, started by either side.
func TestTLSCloseHandshake(t *testing.T) {
	forEachIO(t, func(t *testing.T, opt *Options) {
		t.Run("by peer", func(t *testing.T) {
			_, client, ended := tlsPair(t, opt, echo{})
			br := bufio.NewReader(client)
			writeAll(t, client, clientFrame(true, OpClose, closePayload(1000, "bye"), [4]byte{1, 2, 3, 4}))
			expectCloseFrame(t, client, br, 1000)
			if ci := waitEnd(t, ended); ci.Code != 1000 || !ci.ByPeer || ci.Dropped {
				t.Fatalf("ended with %+v", ci)
			}
			_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the close handshake: %v, want EOF (close_notify or hang-up)", err)
			}
		})
		t.Run("by relay", func(t *testing.T) {
			c, client, ended := tlsPair(t, opt, echo{})
			br := bufio.NewReader(client)
			sendFrame(t, c, "last", false)
			c.Close(Close{4000, "done"}, true)
			if f, err := readServerFrame(br); err != nil || f.op != OpText || string(f.payload) != "last" {
				t.Fatalf("got %v %v, want the queued frame first", f, err)
			}
			expectCloseFrame(t, client, br, 4000)
			writeAll(t, client, clientFrame(true, OpClose, closePayload(4000, ""), [4]byte{1, 2, 3, 4}))
			if ci := waitEnd(t, ended); ci.Code != 4000 || ci.ByPeer || ci.Dropped {
				t.Fatalf("ended with %+v", ci)
			}
		})
	})
}

// Large and many frames both ways, in one burst: messages larger than a
// TLS record, fragmented messages, many frames per record.
func TestTLSLargeAndManyFrames(t *testing.T) {
	forEachIO(t, func(t *testing.T, opt *Options) {
		opt.MaxMessage = 1 << 20
		_, client, _ := tlsPair(t, opt, echo{})
		key := [4]byte{3, 1, 4, 1}
		var want [][]byte
		var burst []byte
		for i := range 40 {
			n := 10 + i*997
			if i%10 == 9 {
				n = 300<<10 + i
			}
			p := bytes.Repeat([]byte{byte('a' + i%26)}, n)
			want = append(want, p)
			if i%7 == 3 { // a fragmented message
				burst = append(burst, clientFrame(false, OpText, p[:n/2], key)...)
				burst = append(burst, clientFrame(true, OpContinuation, p[n/2:], key)...)
				continue
			}
			burst = append(burst, clientFrame(true, OpText, p, key)...)
		}
		go func() { _, _ = client.Write(burst) }()
		br := bufio.NewReader(client)
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i, w := range want {
			f, err := readServerFrame(br)
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if f.op != OpText || !bytes.Equal(f.payload, w) {
				t.Fatalf("frame %d: got %d bytes, want %d", i, len(f.payload), len(w))
			}
		}
	})
}

// A slow reader gets every frame in order once it reads; one that stops
// reading is closed by the write deadline.
func TestTLSSlowReader(t *testing.T) {
	forEachIO(t, func(t *testing.T, opt *Options) {
		t.Run("slow", func(t *testing.T) {
			opt := *opt
			opt.QueueBytes = 64 << 20
			c, client, _ := tlsPair(t, &opt, echo{})
			const n = 400
			go func() {
				for i := range n {
					if send(c, fmt.Sprintf("%05d", i)+string(bytes.Repeat([]byte{'x'}, 8<<10)), i%3 == 0) != nil {
						return // the test fails on the missing frames
					}
				}
			}()
			time.Sleep(300 * time.Millisecond) // the socket fills up meanwhile
			br := bufio.NewReader(client)
			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			for i := range n {
				f, err := readServerFrame(br)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if got := string(f.payload[:5]); got != fmt.Sprintf("%05d", i) {
					t.Fatalf("frame %d: got %s", i, got)
				}
				if i%50 == 0 {
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
		t.Run("stalled", func(t *testing.T) {
			opt := *opt
			opt.QueueBytes = 64 << 20
			opt.WriteTimeout = 200 * time.Millisecond
			c, _, ended := tlsPair(t, &opt, echo{})
			big := string(bytes.Repeat([]byte{'y'}, 32<<10))
			for range 400 { // far more than the sockets hold
				if send(c, big, false) != nil {
					break
				}
			}
			if ci := waitEnd(t, ended); ci.Code != 1011 || !ci.Dropped {
				t.Fatalf("ended with %+v, want 1011 dropped (write timeout)", ci)
			}
			if q := c.QueuedBytes(); q != 0 {
				t.Fatalf("%d bytes still charged after the end", q)
			}
		})
	})
}

// send is sendFrame for any goroutine: it reports the error.
func send(c *Conn, payload string, now bool) error {
	b := bufpool.Get(16 + len(payload))
	n := copy(b.B[16:], payload)
	err := c.Send(b, b.B[16:16+n], now)
	if err != nil {
		b.Release()
	}
	return err
}

// Idle TLS connections on a loop own no goroutine.
func TestTLSIdleOnLoopHasNoGoroutine(t *testing.T) {
	g, err := evloop.NewGroup(2)
	if err != nil {
		t.Skip("no event loop on this system")
	}
	t.Cleanup(g.Close)
	opt := *testOptions()
	opt.Loops = g
	opt.HeartbeatInterval = time.Hour
	runtime.GC()
	before := runtime.NumGoroutine()
	const n = 50
	for i := range n {
		_, client, _ := tlsPair(t, &opt, echo{})
		msg := fmt.Sprintf("m%d", i)
		writeAll(t, client, clientFrame(true, OpText, []byte(msg), [4]byte{1, 1, 1, 1}))
		f, err := readServerFrame(bufio.NewReader(client))
		if err != nil || string(f.payload) != msg {
			t.Fatalf("echo %d: %v %q", i, err, f.payload)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if after := runtime.NumGoroutine(); after-before > n/5 {
		t.Fatalf("%d goroutines before, %d with %d idle TLS connections", before, after, n)
	}
}

// The sock hands crypto/tls at most one record per Read, wherever the
// loop's reads cut the stream.
func TestTLSSockReadsOneRecordAtATime(t *testing.T) {
	var stream []byte
	var ends []int // offsets where records end
	for i := range 50 {
		n := (i * 7919) % 17000
		stream = append(stream, 23, 3, 3, byte(n>>8), byte(n))
		stream = append(stream, bytes.Repeat([]byte{byte(i)}, n)...)
		ends = append(ends, len(stream))
	}
	s := &tlsSock{loop: true}
	p := make([]byte, 40<<10)
	pos, cut := 0, 1
	for pos < len(stream) {
		end := min(len(stream), pos+cut)
		s.feed(stream[pos:end])
		for {
			n, err := s.Read(p)
			if err == errNoInput {
				break
			}
			if n == 0 || !bytes.Equal(p[:n], stream[pos:pos+n]) {
				t.Fatalf("at %d: read %d bytes that are not the stream's", pos, n)
			}
			// No read may cross a record's end.
			for _, e := range ends {
				if pos < e && pos+n > e {
					t.Fatalf("read [%d, %d) crosses the record end at %d", pos, pos+n, e)
				}
			}
			pos += n
		}
		cut = cut*3%9001 + 1
	}
}
