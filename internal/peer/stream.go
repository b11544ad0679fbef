package peer

import "github.com/pyrycode/pyrycode-relay/internal/bufpool"

// frameReader parses client frames from input fed in pieces of any size,
// as an event loop reads it. Unlike the reader goroutine's loop it owns no
// input buffer: a header split across reads waits in hdr (at most 14
// bytes), a control payload in a slice made for it, and a data payload is
// unmasked straight from the loop's buffer into the message's pooled
// buffer. Between frames it holds nothing but its fields.
//
// After a read-side violation (or when the connection's owner calls
// startDiscard) it discards: it still parses headers but skips every
// payload, and reports the peer's close frame (rdPeerClose), as the reader
// goroutine's discard does.
type frameReader struct {
	opt *Options // Headroom, Tailroom and MaxMessage

	cur    header       // frame whose payload is being consumed
	got    int64        // payload bytes of cur consumed so far
	ctl    []byte       // control payload of cur (loop: taken with takeControl)
	msg    *bufpool.Buf // data message being assembled
	msgLen int

	hdr     [maxHeader]byte // a header split across reads
	hn      uint8           // bytes in hdr
	msgOp   Opcode
	inFrame bool
	inMsg   bool
	discard bool  // after a violation: skip payloads until the peer's close
	skipAll bool  // ... and the stream can no longer be parsed
	failCl  uint8 // rdFail: which reason (failProtocol, failTooBig)
}

// readEvent is what frameReader.next stopped at.
type readEvent uint8

const (
	rdNone      readEvent = iota // the input is used up
	rdMessage                    // a whole data message: takeMessage
	rdControl                    // a whole control frame: cur.op, takeControl
	rdFail                       // a violation (failCl); the reader now discards
	rdPeerClose                  // discarding: the peer's close frame has arrived
)

const (
	failProtocol = iota + 1
	failTooBig
)

func newFrameReader(opt *Options) frameReader {
	return frameReader{opt: opt}
}

// midMessage reports whether a message or frame has begun arriving: while
// it waits for the rest, the message deadline runs.
func (fr *frameReader) midMessage() bool { return fr.inMsg || fr.inFrame || fr.hn > 0 }

// next consumes p up to the next event and returns how many bytes it used.
// With rdNone all of p was used.
func (fr *frameReader) next(p []byte) (int, readEvent) {
	n := 0
	for {
		if !fr.inFrame {
			if fr.skipAll || n == len(p) {
				return len(p), rdNone
			}
			var hd header
			var err error
			if fr.hn == 0 {
				hd, err = parseHeader(p[n:])
				if err == errNeedMore {
					fr.hn = uint8(copy(fr.hdr[:], p[n:]))
					return len(p), rdNone
				}
				if err == nil {
					n += hd.size
				}
			} else {
				k := copy(fr.hdr[fr.hn:], p[n:])
				hd, err = parseHeader(fr.hdr[:int(fr.hn)+k])
				if err == errNeedMore {
					fr.hn += uint8(k)
					return len(p), rdNone
				}
				if err == nil {
					n += hd.size - int(fr.hn)
				}
				fr.hn = 0
			}
			if err != nil {
				fr.hn = 0
				if fr.discard {
					fr.skipAll = true
					return len(p), rdNone
				}
				fr.startDiscard()
				fr.skipAll = true
				fr.failCl = failProtocol
				return len(p), rdFail
			}
			fr.cur, fr.got, fr.inFrame = hd, 0, true
			if !fr.discard {
				if ev, ok := fr.beginFrame(); !ok {
					return n, ev
				}
			}
		}

		k := int(min(fr.cur.length-fr.got, int64(len(p)-n)))
		if k > 0 && !fr.discard {
			src := p[n : n+k]
			if fr.cur.op.isControl() {
				unmaskCopy(fr.ctl[fr.got:fr.got+int64(k)], src, fr.cur.mask, int(fr.got))
			} else {
				at := fr.opt.Headroom + fr.msgLen + int(fr.got)
				unmaskCopy(fr.msg.B[at:at+k], src, fr.cur.mask, int(fr.got))
			}
		}
		fr.got += int64(k)
		n += k
		if fr.got < fr.cur.length {
			return n, rdNone
		}
		fr.inFrame = false
		switch {
		case fr.discard:
			if fr.cur.op == OpClose {
				return n, rdPeerClose
			}
		case fr.cur.op.isControl():
			return n, rdControl
		default:
			fr.msgLen += int(fr.cur.length)
			if fr.cur.fin {
				fr.inMsg = false
				return n, rdMessage
			}
		}
	}
}

// beginFrame checks a data frame against the message in progress and
// makes room for its payload, or a slice for a control payload. On a
// violation it starts discarding (the frame's payload is skipped) and
// returns rdFail, false.
func (fr *frameReader) beginFrame() (readEvent, bool) {
	hd := &fr.cur
	if hd.op.isControl() {
		if hd.length > 0 {
			fr.ctl = make([]byte, hd.length)
		}
		return rdNone, true
	}
	switch {
	case hd.op == OpContinuation && !fr.inMsg, hd.op != OpContinuation && fr.inMsg:
		fr.startDiscard()
		fr.failCl = failProtocol
		return rdFail, false
	case hd.op != OpContinuation:
		fr.inMsg, fr.msgOp, fr.msgLen = true, hd.op, 0
	}
	if hd.length > int64(fr.opt.MaxMessage-fr.msgLen) {
		fr.startDiscard()
		fr.failCl = failTooBig
		return rdFail, false
	}
	n := int(hd.length)
	if fr.msg == nil {
		fr.msg = bufpool.Get(fr.opt.Headroom + fr.opt.Tailroom + n)
	} else {
		fr.msg = bufpool.Grow(fr.msg, fr.opt.Headroom+fr.msgLen, fr.opt.Headroom+fr.opt.Tailroom+fr.msgLen+n)
	}
	return rdNone, true
}

// takeMessage hands over the message an rdMessage reported: its buffer,
// opcode and payload (buf.B[headroom:][:len]).
func (fr *frameReader) takeMessage() (*bufpool.Buf, Opcode, []byte) {
	m := fr.msg
	fr.msg = nil
	return m, fr.msgOp, m.B[fr.opt.Headroom : fr.opt.Headroom+fr.msgLen]
}

// takeControl hands over the payload of the control frame an rdControl
// reported (nil when empty).
func (fr *frameReader) takeControl() []byte {
	p := fr.ctl
	fr.ctl = nil
	return p
}

// startDiscard switches to discarding: the message in progress is dropped
// and the rest of the frame being read is skipped.
func (fr *frameReader) startDiscard() {
	fr.discard = true
	fr.release()
}

// release drops whatever the reader holds.
func (fr *frameReader) release() {
	fr.msg.Release()
	fr.msg, fr.ctl, fr.inMsg = nil, nil, false
}
