package relay

// Close-handling edge cases found from outside (RFC 6455 close handshake,
// the real daemon's restart habits). Helpers here are prefixed "cl".

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// A close frame whose reason is not valid UTF-8 fails the connection with
// 1007 (RFC 6455 §5.5.1 and §8.1) on both legs, and a phone's close notice
// says 1007.
func TestCloseReasonNotUTF8(t *testing.T) {
	tr := startRelay(t, Config{})
	const id = "cl-utf8"
	bin := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	for _, reason := range []string{"\xff", "ok\xc3", "\xed\xa0\x80", "\xc0\xaf", "caf\xe9"} {
		ph := lcDialRaw(t, tr, "/v1/client", phoneHeaders(id), nil)
		ph.write(t, lcFrame(true, 0x1, []byte(`{"v":2}`), true))
		m := lcEnvRe.FindStringSubmatch(string(bin.next(t)))
		if m == nil {
			t.Fatal("no envelope from the raw phone")
		}
		ph.write(t, lcFrame(true, 0x8, append([]byte{0x03, 0xE8}, reason...), true)) // 1000
		ph.expectClose(t, 1007, 5*time.Second)
		if got := string(bin.next(t)); got != lcNotice(m[1], 1007) {
			t.Fatalf("reason %q: binary got %q, want %q", reason, got, lcNotice(m[1], 1007))
		}
	}
	// A valid reason, multi-byte characters included, is still echoed.
	ph := lcDialRaw(t, tr, "/v1/client", phoneHeaders(id), nil)
	ph.write(t, lcFrame(true, 0x1, []byte(`{"v":2}`), true))
	m := lcEnvRe.FindStringSubmatch(string(bin.next(t)))
	ph.write(t, lcFrame(true, 0x8, append([]byte{0x0F, 0xA0}, "caf\u00e9 \u65e5"...), true)) // 4000
	ph.expectClose(t, 4000, 5*time.Second)
	if got := string(bin.next(t)); m == nil || got != lcNotice(m[1], 4000) {
		t.Fatalf("binary got %q, want the 4000 notice", got)
	}

	// The binary's leg.
	rb := lcDialRaw(t, tr, "/v1/server", binaryHeaders("cl-utf8-binary"), nil)
	tr.waitBinaries(2)
	rb.write(t, lcFrame(true, 0x8, []byte{0x03, 0xE8, 'x', 0xfe}, true))
	rb.expectClose(t, 1007, 5*time.Second)
	tr.waitBinaries(1)
}

// clHangup checks that the relay closes r's TCP connection cleanly (EOF,
// nothing written after its close frame) within 5 s: long before a close
// wait the test set far longer.
func clHangup(t *testing.T, r *lcRaw) {
	t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := r.br.ReadByte()
	switch {
	case err == nil:
		t.Fatalf("relay wrote %#x after its close frame", b)
	case !errors.Is(err, io.EOF):
		t.Fatalf("want the relay to hang up (EOF) once both close frames have passed, got %v", err)
	}
}

// When the relay fails a connection and the peer answers with its own
// close frame, the relay closes TCP at once (RFC 6455 §7.1.1) instead of
// waiting out its close wait; the binary's close notice follows at once.
func TestCloseFailedConnectionHangsUpAfterPeerClose(t *testing.T) {
	tr := startRelay(t, Config{CloseWait: time.Minute, MaxFrameBytes: 1024})
	const id = "cl-hangup"
	bin := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	closeFrame := lcFrame(true, 0x8, []byte{0x03, 0xE8}, true)

	// Too big (1009): the phone sends the rest of its frame and another
	// message before answering the close.
	ph := lcDialRaw(t, tr, "/v1/client", phoneHeaders(id), nil)
	ph.write(t, lcFrame(true, 0x1, []byte(`{"v":2}`), true))
	m := lcEnvRe.FindStringSubmatch(string(bin.next(t)))
	if m == nil {
		t.Fatal("no envelope from the raw phone")
	}
	big := lcFrame(true, 0x1, []byte(`"`+strings.Repeat("b", 3000)+`"`), true)
	ph.write(t, big[:100])
	ph.expectClose(t, 1009, 5*time.Second)
	ph.write(t, append(append(big[100:], lcFrame(true, 0x1, []byte(`"late"`), true)...), closeFrame...))
	clHangup(t, ph)
	if got := string(bin.next(t)); got != lcNotice(m[1], 1009) {
		t.Fatalf("binary got %q, want %q", got, lcNotice(m[1], 1009))
	}

	// A bad close frame (1002) is the phone's close: nothing more to wait for.
	ph = lcDialRaw(t, tr, "/v1/client", phoneHeaders(id), nil)
	ph.write(t, lcFrame(true, 0x1, []byte(`{"v":2}`), true))
	m = lcEnvRe.FindStringSubmatch(string(bin.next(t)))
	ph.write(t, lcFrame(true, 0x8, []byte{0x03, 0xED}, true))
	ph.expectClose(t, 1002, 5*time.Second)
	clHangup(t, ph)
	if got := string(bin.next(t)); m == nil || got != lcNotice(m[1], 1002) {
		t.Fatalf("binary got %q, want the 1002 notice", got)
	}

	// The binary's leg: a protocol error (continuation first), then its close.
	rb := lcDialRaw(t, tr, "/v1/server", binaryHeaders("cl-hangup-binary"), nil)
	tr.waitBinaries(2)
	rb.write(t, lcFrame(true, 0x0, []byte("x"), true))
	rb.expectClose(t, 1002, 5*time.Second)
	rb.write(t, closeFrame)
	clHangup(t, rb)
	tr.waitBinaries(1)
}
