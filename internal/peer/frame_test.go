package peer

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
)

func TestParseHeader(t *testing.T) {
	mask := []byte{1, 2, 3, 4}
	cases := []struct {
		name string
		in   []byte
		want header
		err  error
	}{
		{"short text", append([]byte{0x81, 0x85}, mask...), header{fin: true, op: OpText, length: 5, size: 6}, nil},
		{"16-bit len", append([]byte{0x01, 0xFE, 0x01, 0x00}, mask...), header{op: OpText, length: 256, size: 8}, nil},
		{"64-bit len", append([]byte{0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0}, mask...), header{fin: true, op: OpBinary, length: 65536, size: 14}, nil},
		{"one byte", []byte{0x81}, header{}, errNeedMore},
		{"no mask yet", []byte{0x81, 0x85, 1, 2}, header{}, errNeedMore},
		{"unmasked", []byte{0x81, 0x05}, header{}, errProtocol},
		{"rsv1", append([]byte{0xC1, 0x85}, mask...), header{}, errProtocol},
		{"opcode 3", append([]byte{0x83, 0x80}, mask...), header{}, errProtocol},
		{"opcode 0xB", append([]byte{0x8B, 0x80}, mask...), header{}, errProtocol},
		{"fragmented ping", append([]byte{0x09, 0x80}, mask...), header{}, errProtocol},
		{"long ping", append([]byte{0x89, 0xFE, 0, 126}, mask...), header{}, errProtocol},
		{"non-minimal 16", append([]byte{0x81, 0xFE, 0, 5}, mask...), header{}, errProtocol},
		{"non-minimal 64", append([]byte{0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0, 5}, mask...), header{}, errProtocol},
		{"64-bit msb", append([]byte{0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0}, mask...), header{}, errProtocol},
	}
	for _, tc := range cases {
		h, err := parseHeader(tc.in)
		if err != tc.err {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
			continue
		}
		if err == nil {
			tc.want.mask = [4]byte{1, 2, 3, 4}
			if h != tc.want {
				t.Errorf("%s: %+v, want %+v", tc.name, h, tc.want)
			}
		}
	}
}

func TestPutHeader(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536, 1 << 20} {
		var b [10]byte
		k := putHeader(b[:], OpText, n)
		if k != headerLen(n) || b[0] != 0x81 {
			t.Fatalf("n=%d: len %d hdr %x", n, k, b[:k])
		}
		var got int
		switch b[1] {
		case 126:
			got = int(binary.BigEndian.Uint16(b[2:]))
		case 127:
			got = int(binary.BigEndian.Uint64(b[2:]))
		default:
			got = int(b[1])
		}
		if got != n {
			t.Fatalf("n=%d encoded %d", n, got)
		}
	}
}

func TestUnmaskCopyMatchesNaive(t *testing.T) {
	key := [4]byte{0xA1, 0xB2, 0xC3, 0xD4}
	src := make([]byte, 257)
	for i := range src {
		src[i] = byte(i * 7)
	}
	for pos := range 4 {
		for n := range len(src) + 1 {
			got := make([]byte, n)
			unmaskCopy(got, src[:n], key, pos)
			inPlace := append([]byte(nil), src[:n]...)
			unmaskCopy(inPlace, inPlace, key, pos)
			for i := range n {
				if want := src[i] ^ key[(pos+i)&3]; got[i] != want || inPlace[i] != want {
					t.Fatalf("pos %d n %d byte %d: %x (in place %x) want %x", pos, n, i, got[i], inPlace[i], want)
				}
			}
		}
	}
}

// clientFrame builds a masked client frame.
func clientFrame(fin bool, op Opcode, payload []byte, key [4]byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	var out []byte
	n := len(payload)
	switch {
	case n < 126:
		out = []byte{b0, 0x80 | byte(n)}
	case n < 1<<16:
		out = []byte{b0, 0x80 | 126, byte(n >> 8), byte(n)}
	default:
		out = []byte{b0, 0x80 | 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i&3])
	}
	return out
}

type collect struct{ msgs [][]byte }

func (c *collect) HandleMessage(_ *Conn, _ Opcode, buf *bufpool.Buf, payload []byte) {
	c.msgs = append(c.msgs, bytes.Clone(payload))
	buf.Release()
}

func testOptions() *Options {
	o := Options{
		MaxMessage:        1 << 16,
		Headroom:          7,
		Tailroom:          1,
		HeartbeatInterval: -1,
		CloseWait:         200 * time.Millisecond,
		CodeAllowed:       func(c int) bool { return c >= 1000 && c <= 4999 && c != 1005 && c != 1006 },
		ReasonProtocol:    Close{1002, "protocol error"},
		ReasonTooBig:      Close{1009, "message too big"},
		ReasonInvalidUTF8: Close{1007, "invalid UTF-8"},
		Loops:             testLoops,
	}.WithDefaults()
	return &o
}

// runInput feeds input to a Conn as if a client sent it, then hangs up, and
// returns the messages delivered and everything the Conn wrote back.
func runInput(t testing.TB, input []byte, opt *Options) ([][]byte, []byte) {
	server, client := net.Pipe()
	c := New(server, nil, opt)
	var h collect
	done := make(chan struct{})
	go func() { c.Run(&h); close(done) }()
	out := make(chan []byte)
	go func() { b, _ := io.ReadAll(client); out <- b }()
	go func() {
		client.Write(input)
		// If the input made the relay close, let its close frame out and
		// its close wait run; otherwise hang up.
		select {
		case <-c.Closing():
			select {
			case <-done:
			case <-time.After(2 * time.Second):
			}
		case <-time.After(50 * time.Millisecond):
		}
		client.Close()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	return h.msgs, <-out
}

func TestReadReassemblesFragmentsAndAnswersPing(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	var in []byte
	in = append(in, clientFrame(false, OpText, []byte(`{"a":`), key)...)
	in = append(in, clientFrame(true, OpPing, []byte("hi"), key)...)
	in = append(in, clientFrame(false, OpContinuation, bytes.Repeat([]byte("1"), 300), key)...)
	in = append(in, clientFrame(true, OpContinuation, []byte(`}`), key)...)
	in = append(in, clientFrame(true, OpText, []byte(`"second"`), key)...)
	in = append(in, clientFrame(true, OpClose, []byte{0x0F, 0xA0}, key)...) // 4000
	msgs, out := runInput(t, in, testOptions())
	want := `{"a":` + string(bytes.Repeat([]byte("1"), 300)) + `}`
	if len(msgs) != 2 || string(msgs[0]) != want || string(msgs[1]) != `"second"` {
		t.Fatalf("messages %q", msgs)
	}
	// pong "hi", then the close echo with 4000.
	wantOut := []byte{0x8A, 2, 'h', 'i', 0x88, 2, 0x0F, 0xA0}
	if !bytes.Equal(out, wantOut) {
		t.Fatalf("wrote %x, want %x", out, wantOut)
	}
}

func TestReadProtocolErrors(t *testing.T) {
	key := [4]byte{1, 1, 1, 1}
	for name, in := range map[string][]byte{
		"continuation first": clientFrame(true, OpContinuation, []byte("x"), key),
		"text inside text":   append(clientFrame(false, OpText, []byte("x"), key), clientFrame(true, OpText, []byte("y"), key)...),
		"unmasked":           {0x81, 0x01, 'x'},
		"bad close code":     clientFrame(true, OpClose, []byte{0x03, 0xED}, key), // 1005
		"one-byte close":     clientFrame(true, OpClose, []byte{0x03}, key),
	} {
		msgs, out := runInput(t, in, testOptions())
		if len(msgs) != 0 {
			t.Errorf("%s: delivered %q", name, msgs)
		}
		if !bytes.HasPrefix(out, []byte{0x88, 16, 0x03, 0xEA}) { // close 1002 "protocol error"
			t.Errorf("%s: wrote %x", name, out)
		}
	}
}

func TestReadTooBig(t *testing.T) {
	opt := testOptions()
	key := [4]byte{}
	in := clientFrame(true, OpText, make([]byte, opt.MaxMessage+1), key)
	msgs, out := runInput(t, in, opt)
	if len(msgs) != 0 || !bytes.HasPrefix(out, []byte{0x88, 17, 0x03, 0xF1}) { // 1009
		t.Fatalf("msgs %d out %x", len(msgs), out)
	}
	// Fragments that add up to more than the cap.
	in = append(clientFrame(false, OpText, make([]byte, opt.MaxMessage/2+1), key),
		clientFrame(true, OpContinuation, make([]byte, opt.MaxMessage/2+1), key)...)
	msgs, out = runInput(t, in, opt)
	if len(msgs) != 0 || !bytes.HasPrefix(out, []byte{0x88, 17, 0x03, 0xF1}) {
		t.Fatalf("fragmented: msgs %d out %x", len(msgs), out)
	}
}

func TestPendingBytesAreRead(t *testing.T) {
	key := [4]byte{5, 6, 7, 8}
	first := clientFrame(true, OpText, []byte(`"early"`), key)
	server, client := net.Pipe()
	defer client.Close()
	c := New(server, first, testOptions())
	var h collect
	done := make(chan struct{})
	go func() { c.Run(&h); close(done) }()
	go io.Copy(io.Discard, client)
	client.Write(clientFrame(true, OpClose, []byte{0x03, 0xE8}, key))
	<-done
	if len(h.msgs) != 1 || string(h.msgs[0]) != `"early"` {
		t.Fatalf("msgs %q", h.msgs)
	}
}

// FuzzRead feeds arbitrary client bytes to a connection: it must never
// panic, must end when the client hangs up, and may deliver only messages
// that fit the cap.
func FuzzRead(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	f.Add(clientFrame(true, OpText, []byte(`{"v":2}`), key))
	f.Add(append(clientFrame(false, OpText, []byte(`[1,`), key), clientFrame(true, OpContinuation, []byte(`2]`), key)...))
	f.Add(clientFrame(true, OpPing, []byte("p"), key))
	f.Add(clientFrame(true, OpClose, []byte{0x03, 0xE8, 'b', 'y', 'e'}, key))
	f.Add([]byte{0x81, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4})
	f.Add([]byte{0x81, 0xFE, 0x00})
	f.Add(clientFrame(true, OpClose, []byte{0x03, 0xE8, 0xff}, key))
	// A violation, then frames the discard must skip, then the peer's close.
	f.Add(bytes.Join([][]byte{clientFrame(true, OpContinuation, []byte("x"), key),
		clientFrame(true, OpText, make([]byte, 300), key), clientFrame(true, OpPing, nil, key),
		clientFrame(true, OpClose, []byte{0x03, 0xE8}, key)}, nil))
	opt := testOptions()
	opt.MaxMessage = 4096
	opt.CloseWait = 5 * time.Millisecond
	f.Fuzz(func(t *testing.T, in []byte) {
		msgs, _ := runInput(t, in, opt)
		for _, m := range msgs {
			if len(m) > opt.MaxMessage {
				t.Fatalf("delivered %d bytes over the %d cap", len(m), opt.MaxMessage)
			}
		}
	})
}

// A close frame whose reason is not valid UTF-8 is answered with 1007, not
// echoed (RFC 6455 §5.5.1, §8.1).
func TestReadCloseReasonNotUTF8(t *testing.T) {
	key := [4]byte{3, 1, 4, 1}
	for _, reason := range []string{"\xff", "ok\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80"} {
		in := clientFrame(true, OpClose, append([]byte{0x03, 0xE8}, reason...), key)
		_, out := runInput(t, in, testOptions())
		if !bytes.HasPrefix(out, []byte{0x88}) || len(out) < 4 || out[2] != 0x03 || out[3] != 0xEF { // 1007
			t.Errorf("reason %q: wrote %x, want a close 1007", reason, out)
		}
	}
	// A valid reason is echoed with the code alone.
	in := clientFrame(true, OpClose, append([]byte{0x03, 0xE8}, "\u00e9t\u00e9"...), key)
	if _, out := runInput(t, in, testOptions()); !bytes.Equal(out, []byte{0x88, 2, 0x03, 0xE8}) {
		t.Errorf("valid reason: wrote %x, want the echo of 1000", out)
	}
}
