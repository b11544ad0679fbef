package peer

import (
	"bytes"
	"fmt"
	"testing"
)

// streamResult is everything a frameReader reported for an input.
type streamResult struct {
	events []string
}

// feedStream runs input through a frameReader in pieces whose sizes come
// from cuts (cycled; 0 means one byte), taking every message and control
// payload as the connection does.
func feedStream(opt *Options, input []byte, cuts []byte) streamResult {
	fr := newFrameReader(opt)
	defer fr.release()
	var res streamResult
	ci := 0
	for len(input) > 0 {
		size := len(input)
		if len(cuts) > 0 {
			size = min(len(input), 1+int(cuts[ci%len(cuts)]))
			ci++
		}
		p := input[:size]
		input = input[size:]
		for len(p) > 0 {
			n, ev := fr.next(p)
			p = p[n:]
			switch ev {
			case rdNone:
				if len(p) != 0 {
					panic("rdNone left input unread")
				}
			case rdMessage:
				buf, op, payload := fr.takeMessage()
				res.events = append(res.events, fmt.Sprintf("msg %d %q", op, payload))
				buf.Release()
			case rdControl:
				res.events = append(res.events, fmt.Sprintf("ctl %d %q", fr.cur.op, fr.takeControl()))
			case rdFail:
				res.events = append(res.events, fmt.Sprintf("fail %d", fr.failCl))
			case rdPeerClose:
				res.events = append(res.events, "peer close")
			}
		}
	}
	if fr.midMessage() {
		res.events = append(res.events, "incomplete")
	}
	return res
}

func TestFrameReaderEvents(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	big := bytes.Repeat([]byte("x"), 300)
	var in []byte
	in = append(in, clientFrame(true, OpText, []byte("hello"), key)...)
	in = append(in, clientFrame(false, OpText, []byte("frag"), key)...)
	in = append(in, clientFrame(true, OpPing, []byte("p"), key)...)
	in = append(in, clientFrame(true, OpContinuation, big, key)...)
	in = append(in, clientFrame(true, OpText, nil, key)...)
	in = append(in, clientFrame(true, OpContinuation, []byte("bad"), key)...) // continuation of nothing
	in = append(in, clientFrame(true, OpText, []byte("skipped"), key)...)
	in = append(in, clientFrame(true, OpClose, []byte{3, 232}, key)...)
	want := []string{
		`msg 1 "hello"`,
		`ctl 9 "p"`,
		fmt.Sprintf("msg 1 %q", append([]byte("frag"), big...)),
		`msg 1 ""`,
		fmt.Sprintf("fail %d", failProtocol),
		"peer close",
	}
	opt := testOptions()
	for _, cuts := range [][]byte{nil, {0}, {1}, {6}, {13, 2, 200}} {
		got := feedStream(opt, in, cuts).events
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("cuts %v:\n got %q\nwant %q", cuts, got, want)
		}
	}
}

func TestFrameReaderTooBigAndBadHeader(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	opt := testOptions()
	opt.MaxMessage = 100
	in := append(clientFrame(true, OpText, bytes.Repeat([]byte("y"), 101), key), clientFrame(true, OpClose, nil, key)...)
	got := feedStream(opt, in, []byte{5}).events
	if want := []string{fmt.Sprintf("fail %d", failTooBig), "peer close"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("too big: got %q, want %q", got, want)
	}
	// An unmasked frame cannot be parsed: everything after it is dropped.
	in = append([]byte{0x81, 0x01, 'a'}, clientFrame(true, OpClose, nil, key)...)
	got = feedStream(opt, in, nil).events
	if want := []string{fmt.Sprintf("fail %d", failProtocol)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bad header: got %q, want %q", got, want)
	}
}

// FuzzFrameReader checks that how the input is cut into reads never
// changes what the reader reports, and that it never panics or reads past
// its input. It needs no connection, so each input costs microseconds.
func FuzzFrameReader(f *testing.F) {
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	seed := append(clientFrame(false, OpText, []byte("ab"), key), clientFrame(true, OpPing, []byte("x"), key)...)
	seed = append(seed, clientFrame(true, OpContinuation, bytes.Repeat([]byte("c"), 200), key)...)
	f.Add(seed, []byte{0, 3})
	f.Add(clientFrame(true, OpClose, []byte{3, 232, 'o', 'k'}, key), []byte{1})
	f.Add([]byte{0x81, 0xFE, 0x00, 0x7D, 1, 2, 3, 4}, []byte{2})
	opt := testOptions()
	opt.MaxMessage = 4096
	f.Fuzz(func(t *testing.T, input, cuts []byte) {
		whole := feedStream(opt, input, nil)
		split := feedStream(opt, input, cuts)
		if fmt.Sprint(whole.events) != fmt.Sprint(split.events) {
			t.Fatalf("cuts %v changed the events:\nwhole %q\nsplit %q", cuts, whole.events, split.events)
		}
	})
}
