package relay

// Close-handling edge cases found from outside (RFC 6455 close handshake,
// the real daemon's restart habits). Helpers here are prefixed "cl".

import (
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
