package peer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// Tests of the close handshake after the relay fails a connection (RFC
// 6455 §7.1.1): once both close frames have passed, the relay closes the
// TCP connection at once rather than waiting out CloseWait. CloseWait is
// long here, so only the peer's close frame can end a connection quickly.

const longCloseWait = 30 * time.Second

func failOptions() *Options {
	opt := testOptions()
	opt.CloseWait = longCloseWait
	opt.MaxMessage = 1024
	opt.ReasonMessageTimeout = Close{1008, "message timeout"}
	return opt
}

// expectCloseFrame reads the next frame, which must be a close with code.
func expectCloseFrame(t *testing.T, client net.Conn, br *bufio.Reader, code int) {
	t.Helper()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := readServerFrame(br)
	if err != nil {
		t.Fatalf("read: %v, want close %d", err, code)
	}
	if f.op != OpClose || len(f.payload) < 2 || int(binary.BigEndian.Uint16(f.payload)) != code {
		t.Fatalf("got op %d %q, want close %d", f.op, f.payload, code)
	}
}

// expectHangup checks that the relay closes the TCP connection cleanly (EOF,
// nothing more written) well before the close wait, and that Run ends.
func expectHangup(t *testing.T, c *Conn, client net.Conn, br *bufio.Reader) {
	t.Helper()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := br.ReadByte()
	switch {
	case err == nil:
		t.Fatalf("relay wrote %#x after its close frame", b)
	case errors.Is(err, io.EOF):
	default:
		t.Fatalf("want the relay to hang up (EOF) long before its %v close wait, got %v", longCloseWait, err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end")
	}
}

func writeAll(t *testing.T, nc net.Conn, parts ...[]byte) {
	t.Helper()
	nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for _, p := range parts {
		if _, err := nc.Write(p); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// After a failure the peer may keep sending what it had under way (the rest
// of an oversized frame, more messages, pings) before it answers our close:
// the relay skips it frame by frame and hangs up once the peer's close frame
// has arrived.
func TestFailedConnectionHangsUpAfterPeerClose(t *testing.T) {
	key := [4]byte{7, 7, 1, 2}
	closeFrame := clientFrame(true, OpClose, []byte{0x03, 0xE8}, key)
	big := bytes.Repeat([]byte("b"), 5000) // over the 1024-byte cap, and over a read chunk
	bigFrame := clientFrame(true, OpText, big, key)
	more := bytes.Join([][]byte{
		clientFrame(true, OpText, []byte(`"after"`), key),
		clientFrame(true, OpPing, []byte("ping after"), key),
		clientFrame(false, OpText, bytes.Repeat([]byte("f"), 300), key),
		clientFrame(true, OpContinuation, bytes.Repeat([]byte("g"), 70000), key),
	}, nil)

	for _, tc := range []struct {
		name   string
		before []byte // sent first: makes the relay fail
		code   int
		after  []byte // sent once the relay's close frame has arrived, before the peer's close
	}{
		{"too big, rest of the frame after the close", bigFrame[:200], 1009, append(bigFrame[200:], more...)},
		{"too big, whole frame before", bigFrame, 1009, more},
		{"continuation first", clientFrame(true, OpContinuation, []byte("x"), key), 1002, more},
		{"text inside text", append(clientFrame(false, OpText, []byte("x"), key), clientFrame(true, OpText, []byte("yy"), key)...), 1002, more},
		{"too big, with nothing after", bigFrame, 1009, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, client, _ := tcpPair(t, failOptions())
			br := bufio.NewReader(client)
			writeAll(t, client, tc.before)
			expectCloseFrame(t, client, br, tc.code)
			writeAll(t, client, tc.after, closeFrame)
			expectHangup(t, c, client, br)
			if got := c.Info().Code; got != tc.code {
				t.Fatalf("close info %d, want %d", got, tc.code)
			}
		})
	}
}

// A close frame that the relay rejects is still the peer's close frame:
// once the relay's answer is out, the handshake is over.
func TestBadCloseFrameHangsUpAtOnce(t *testing.T) {
	key := [4]byte{9, 9, 9, 9}
	for _, tc := range []struct {
		name    string
		payload []byte
		code    int
	}{
		{"code 1005", []byte{0x03, 0xED}, 1002},
		{"one byte", []byte{0x03}, 1002},
		{"reason not UTF-8", []byte{0x03, 0xE8, 0xff}, 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, client, _ := tcpPair(t, failOptions())
			br := bufio.NewReader(client)
			writeAll(t, client, clientFrame(true, OpClose, tc.payload, key))
			expectCloseFrame(t, client, br, tc.code)
			expectHangup(t, c, client, br)
		})
	}
}

// The violation and the peer's close frame arrive together, so the reader
// may see the peer's close before the writer has sent the relay's: the
// relay's close frame must still go out before the socket is closed.
func TestFailedConnectionWritesItsCloseFirst(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	in := append(clientFrame(true, OpText, make([]byte, 2000), key), clientFrame(true, OpClose, []byte{0x03, 0xE8}, key)...)
	for range 50 {
		c, client, _ := tcpPair(t, failOptions())
		br := bufio.NewReader(client)
		writeAll(t, client, in)
		expectCloseFrame(t, client, br, 1009)
		expectHangup(t, c, client, br)
	}
}

// A message that stops arriving is cut off with 1008; a peer that then
// finishes what it was sending and answers the close gets a prompt hang-up,
// whether it stalled in a data frame or in a control frame's payload.
func TestMessageTimeoutHangsUpAfterPeerClose(t *testing.T) {
	key := [4]byte{4, 3, 2, 1}
	data := clientFrame(true, OpText, bytes.Repeat([]byte("d"), 600), key)
	ping := clientFrame(true, OpPing, bytes.Repeat([]byte("p"), 100), key)
	for _, tc := range []struct {
		name  string
		frame []byte
		cut   int
	}{
		{"in a data payload", data, 300},
		{"in a data header", data, 3},
		{"in a ping payload", ping, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt := failOptions()
			opt.MessageTimeout = 100 * time.Millisecond
			c, client, _ := tcpPair(t, opt)
			br := bufio.NewReader(client)
			writeAll(t, client, tc.frame[:tc.cut])
			expectCloseFrame(t, client, br, 1008)
			writeAll(t, client, tc.frame[tc.cut:], clientFrame(true, OpClose, []byte{0x03, 0xE8}, key))
			expectHangup(t, c, client, br)
		})
	}
}

// When the stream can no longer be parsed (here an unmasked frame), the
// relay cannot recognise the peer's close frame: it discards input until
// the peer hangs up or the close wait ends, as before.
func TestUnparseableStreamWaitsOutCloseWait(t *testing.T) {
	opt := failOptions()
	opt.CloseWait = 200 * time.Millisecond
	c, client, _ := tcpPair(t, opt)
	br := bufio.NewReader(client)
	writeAll(t, client, []byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'})
	expectCloseFrame(t, client, br, 1002)
	writeAll(t, client, bytes.Repeat([]byte{0xff}, 10000))
	start := time.Now()
	expectHangup(t, c, client, br)
	if el := time.Since(start); el < opt.CloseWait/2 {
		t.Fatalf("hung up after %v on an unparseable stream; it should wait for the %v close wait", el, opt.CloseWait)
	}
}

// Discarding keeps no payload: a peer that streams megabytes of an
// oversized frame after the failure costs one read chunk, and its close
// frame, once the frame is over, is still recognised.
func TestDiscardHoldsNoPayload(t *testing.T) {
	const declared = 32 << 20
	c, client, _ := tcpPair(t, failOptions())
	br := bufio.NewReader(client)
	key := [4]byte{}
	hdr := binary.BigEndian.AppendUint64([]byte{0x81, 0x80 | 127}, declared)
	writeAll(t, client, append(hdr, key[:]...))
	expectCloseFrame(t, client, br, 1009)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	piece := make([]byte, 64<<10)
	for sent := 0; sent < declared; sent += len(piece) {
		writeAll(t, client, piece)
	}
	writeAll(t, client, clientFrame(true, OpClose, []byte{0x03, 0xE8}, key))
	expectHangup(t, c, client, br)
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > declared/4 {
		t.Fatalf("discarding %d MiB allocated %d KiB", declared>>20, grew>>10)
	}
}

// A probe ends as soon as the connection begins to close, not when the
// close handshake is over: the relay closing a silent peer does not hold
// a conflicting claim for the close wait.
func TestProbeEndsWhenCloseBegins(t *testing.T) {
	c, _, _ := tcpPair(t, failOptions()) // the client reads nothing and answers nothing
	res := make(chan bool, 1)
	go func() { res <- c.Probe(time.Minute) }()
	eventually(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.probe != nil })
	c.Close(Close{Code: 1000}, false)
	select {
	case ok := <-res:
		if ok {
			t.Fatal("probe reported a pong that never came")
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("probe still waiting after the close began (close wait %v)", longCloseWait)
	}
}
