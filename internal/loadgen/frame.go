package loadgen

import (
	"bytes"
	"strconv"
)

// Phone frames are valid JSON (the relay closes phones that send anything
// else) and carry what the far end needs to check them:
//
//	{"v":2,"type":"noise_msg","phone":7,"seq":42,"t":123456789,"data":"AAAA…"}
//
// padded with data to the requested size. phone is the sending or receiving
// phone's index, seq the per-stream sequence number and t the send time in
// nanoseconds since the run began (one process, one monotonic clock). Acks
// (fan-out) are {"v":2,"type":"noise_msg","phone":7,"ack":N}.

const (
	typeHello = "noise_init"
	typeData  = "noise_msg"
)

var padding = bytes.Repeat([]byte{'A'}, 4096)

// appendFrame appends a phone frame of at least size bytes (exactly size
// when size exceeds the fixed fields).
func appendFrame(dst []byte, typ string, phone int, seq uint64, t int64, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"v":2,"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, `","phone":`...)
	dst = strconv.AppendInt(dst, int64(phone), 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"data":"`...)
	for pad := size - (len(dst) - start) - 2; pad > 0; {
		k := min(pad, len(padding))
		dst = append(dst, padding[:k]...)
		pad -= k
	}
	return append(dst, `"}`...)
}

func appendAck(dst []byte, phone int, n uint64) []byte {
	dst = append(dst, `{"v":2,"type":"noise_msg","phone":`...)
	dst = strconv.AppendInt(dst, int64(phone), 10)
	dst = append(dst, `,"ack":`...)
	dst = strconv.AppendUint(dst, n, 10)
	return append(dst, '}')
}

// intField finds "key":<digits> in the head of p (our numeric fields come
// before data, whose padding holds no quotes) and parses it.
func intField(p []byte, key string) (int64, bool) {
	head := p[:min(len(p), 256)]
	i := bytes.Index(head, []byte(key))
	if i < 0 {
		return 0, false
	}
	i += len(key)
	neg := false
	if i < len(head) && head[i] == '-' {
		neg = true
		i++
	}
	var v int64
	j := i
	for ; j < len(head) && head[j] >= '0' && head[j] <= '9'; j++ {
		v = v*10 + int64(head[j]-'0')
	}
	if j == i {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// frameFields reads seq and t from a phone frame.
func frameFields(p []byte) (seq uint64, t int64, ok bool) {
	s, ok1 := intField(p, `"seq":`)
	t, ok2 := intField(p, `"t":`)
	return uint64(s), t, ok1 && ok2 && s >= 0
}

// isHello reports whether p is a hello frame.
func isHello(p []byte) bool {
	return bytes.Contains(p[:min(len(p), 64)], []byte(`"type":"`+typeHello+`"`))
}

// Envelopes (binary's leg).

// envelopeConnID returns the conn_id of an envelope.
func envelopeConnID(p []byte) ([]byte, bool) {
	const key = `"conn_id":"`
	i := bytes.Index(p[:min(len(p), 512)], []byte(key))
	if i < 0 {
		return nil, false
	}
	rest := p[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}

// isNotice reports whether an envelope is a close notice (it has a
// close_code and no frame) and returns its code.
func isNotice(p []byte) (int, bool) {
	if bytes.Contains(p, []byte(`"frame"`)) {
		return 0, false
	}
	code, ok := intField(p, `"close_code":`)
	return int(code), ok
}

// appendEnvelope appends {"conn_id":"<id>","frame":<frame>}.
func appendEnvelope(dst, connID, frame []byte) []byte {
	dst = append(dst, `{"conn_id":"`...)
	dst = append(dst, connID...)
	dst = append(dst, `","frame":`...)
	dst = append(dst, frame...)
	return append(dst, '}')
}

func envelopeLen(connID, frame []byte) int { return len(connID) + len(frame) + 23 }
