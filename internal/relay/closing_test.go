package relay

// Close-handling edge cases found from outside (RFC 6455 close handshake,
// the real daemon's restart habits). Helpers here are prefixed "cl".

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pyrycode/pyrycode-relay/internal/peer"
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

// The real daemon restarting, as fast as it can: a clean close (1000, the
// handshake completed) and at once a new claim with the same id, a phone
// attached each time. The new claim may arrive while the old connection is
// closing but not yet released; that is a reclaim all the same. The new
// binary never gets 4409 (one stops the real daemon for good), holds the id
// when its upgrade completes (the phone that dials next reaches it), and
// the old binary's phone is closed with 4404 "binary reclaimed server-id"
// every time.
func TestCloseRestartIsAlwaysReclaim(t *testing.T) {
	const restarts = 500
	tr := startRelay(t, Config{})
	const id = "cl-restart"
	bin := tr.binary(id)
	tr.waitBinaries(1)
	for i := range restarts + 1 {
		ph := tr.dial("/v1/client", phoneHeaders(id))
		frame := fmt.Sprintf(`{"v":2,"type":"noise_init","data":"r%d"}`, i)
		send(t, ph, frame)
		bin.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, env, err := bin.ReadMessage()
		if err != nil {
			t.Fatalf("restart %d: the binary did not get the new phone's frame: %v (takeovers %d, 4409s %d)", i, err,
				tr.srv.Stats().Takeovers.Load(), tr.srv.Stats().Upgrades(EndpointServer, OutcomeConflict))
		}
		if m := lcEnvRe.FindStringSubmatch(string(env)); m == nil || string(env) != lcEnv(m[1], frame) {
			t.Fatalf("restart %d: binary got %q", i, env)
		}
		if i == restarts {
			break
		}
		// Clean close: our close frame, the relay's echo, then hang up.
		if err := bin.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(5*time.Second)); err != nil {
			t.Fatalf("restart %d: close: %v", i, err)
		}
		bin.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err = bin.ReadMessage()
		lcCheckClose(t, err, 1000, "")
		bin.Close()
		bin = tr.binary(id)
		ph.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err = ph.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4404 || ce.Text != "binary reclaimed server-id" {
			t.Fatalf("restart %d: phone ended with %v, want 4404 \"binary reclaimed server-id\"", i, err)
		}
		ph.Close()
	}
	st := tr.srv.Stats()
	if n := st.Upgrades(EndpointServer, OutcomeConflict); n != 0 {
		t.Fatalf("%d claims refused with 4409", n)
	}
	if n := st.Takeovers.Load(); n != 0 {
		t.Fatalf("%d restarts ended as takeovers", n)
	}
	if n := st.GraceReclaimed.Load(); n != restarts {
		t.Fatalf("%d reclaims counted, want %d", n, restarts)
	}
}

// A claim that finds the incumbent's connection closing is a reclaim,
// whoever began the close and whenever: at once when the close had begun
// before the claim (the new binary holds the id when its upgrade
// completes), and as soon as it begins when the claim is already probing.
// Never a 4409, never a takeover; the old phones get exactly what a reclaim
// gives them.
func TestCloseClaimAgainstClosingIncumbent(t *testing.T) {
	check := func(t *testing.T, tr *testRelay, id string, oldPh *lcPump, nb *lcPump) {
		t.Helper()
		oldPh.closed(t, 4404, "binary reclaimed server-id", false)
		lcWaitPhones(t, tr, 0)
		// The new binary holds the id: the next phone reaches it.
		ph := lcPumpConn(t, tr.phone(id))
		cid := lcConnID(t, ph.c, nb)
		lcRoundTrip(t, ph, cid, nb, "after")
		st := tr.srv.Stats()
		if r, k, c := st.GraceReclaimed.Load(), st.Takeovers.Load(), st.Upgrades(EndpointServer, OutcomeConflict); r != 1 || k != 0 || c != 0 {
			t.Fatalf("reclaims %d, takeovers %d, 4409s %d; want 1 0 0", r, k, c)
		}
	}

	t.Run("relay began the close", func(t *testing.T) {
		tr := startRelay(t, Config{CloseWait: time.Minute})
		const id = "cl-closing-relay"
		inc := lcDialRaw(t, tr, "/v1/server", binaryHeaders(id), nil) // never answers the close
		tr.waitBinaries(1)
		oldPh := lcPumpConn(t, tr.phone(id))
		inc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		lcHolderConn(t, tr, id).Close(peer.Close{Code: 1000}, false)
		inc.expectClose(t, 1000, 5*time.Second) // our close frame is out; the relay now waits a minute for the answer
		nb := lcPumpConn(t, tr.binary(id))
		check(t, tr, id, oldPh, nb)
	})

	t.Run("incumbent closed during the probe", func(t *testing.T) {
		tr := startRelay(t, Config{ProbeTimeout: time.Minute})
		const id = "cl-closing-probe"
		inc := lcDialRaw(t, tr, "/v1/server", binaryHeaders(id), nil) // answers no ping
		tr.waitBinaries(1)
		oldPh := lcPumpConn(t, tr.phone(id))
		nbc := tr.binary(id)
		if _, op, _ := inc.readFrame(t, 5*time.Second); op != 0x9 {
			t.Fatalf("incumbent got opcode %#x, want the probe's ping", op)
		}
		inc.write(t, lcFrame(true, 0x8, []byte{0x03, 0xE8}, true)) // clean close instead of a pong
		inc.expectClose(t, 1000, 5*time.Second)
		nb := lcPumpConn(t, nbc)
		check(t, tr, id, oldPh, nb)
	})
}

// Ten pings back to back get fewer pongs (one or two, typically): a pong
// waiting to be written takes the payload of a newer ping. What a client
// can rely on: pongs come in order, each answers one of its pings, and the
// last one answers the last ping.
func TestClosePingBurstAnswersLatest(t *testing.T) {
	tr := startRelay(t, Config{})
	const id = "cl-pings"
	lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	r := lcDialRaw(t, tr, "/v1/client", phoneHeaders(id), nil)
	var burst []byte
	for i := range 10 {
		burst = append(burst, lcFrame(true, 0x9, []byte(fmt.Sprintf("ping-%d", i)), true)...)
	}
	r.write(t, burst)
	last := -1
	for n := 1; last < 9; n++ {
		_, op, p := r.readFrame(t, 5*time.Second)
		var k int
		if _, err := fmt.Sscanf(string(p), "ping-%d", &k); op != 0xA || err != nil || k <= last || k > 9 {
			t.Fatalf("frame %d: opcode %#x %q after the pong of ping %d", n, op, p, last)
		}
		last = k
		t.Logf("pong %d answers ping %d", n, k)
	}
}
