package relay

// Lifecycle tests: claims, conflict probe, grace and reclaim, flow control,
// heartbeats, read limits, deadlines and shutdown (contract sections 3, 4,
// 6 and 7). Every helper here is prefixed "lc" so that it cannot collide
// with helpers of other test files of the package.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/registry"
)

// lcAnyReason makes lcPump.closed accept any reason text.
const lcAnyReason = "\x00any"

// lcPump reads a gorilla connection on its own goroutine, so the
// connection answers pings (a live peer) while the test looks at what it
// received.
type lcPump struct {
	c    *websocket.Conn
	msgs chan []byte
	done chan struct{} // closed when the reader has stopped; err is then set
	quit chan struct{}
	err  error
}

// lcPumpConn starts reading c. Handlers (ping, pong) must be set before.
func lcPumpConn(t *testing.T, c *websocket.Conn) *lcPump {
	t.Helper()
	p := &lcPump{c: c, msgs: make(chan []byte, 1024), done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			op, m, err := c.ReadMessage()
			if err != nil {
				p.err = err
				return
			}
			if op != websocket.TextMessage {
				p.err = fmt.Errorf("relay wrote opcode %d, want text", op)
				return
			}
			select {
			case p.msgs <- m:
			case <-p.quit:
				p.err = errors.New("pump stopped")
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(p.quit)
		c.Close()
		<-p.done
	})
	return p
}

// next returns the next message, failing if none arrives within 5 s or the
// connection ends first.
func (p *lcPump) next(t *testing.T) []byte {
	t.Helper()
	select {
	case m := <-p.msgs:
		return m
	default:
	}
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case m := <-p.msgs:
		return m
	case <-p.done:
		select {
		case m := <-p.msgs:
			return m
		default:
		}
		t.Fatalf("connection ended while a message was expected: %v", p.err)
	case <-timer.C:
		t.Fatal("no message within 5s")
	}
	return nil
}

// quiet checks that nothing arrives and the connection stays open for d.
func (p *lcPump) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case m := <-p.msgs:
		t.Fatalf("unexpected message %.120q", m)
	case <-p.done:
		t.Fatalf("connection ended unexpectedly: %v", p.err)
	case <-timer.C:
	}
}

// closed waits until the relay has closed the connection and checks the
// close code and reason. Unless skip, no data message may precede it.
func (p *lcPump) closed(t *testing.T, code int, reason string, skip bool) {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		t.Fatalf("not closed within 5s (want %d %q)", code, reason)
	}
	if !skip && len(p.msgs) > 0 {
		t.Fatalf("%d unexpected message(s) before the close, first %.120q", len(p.msgs), <-p.msgs)
	}
	lcCheckClose(t, p.err, code, reason)
}

func lcCheckClose(t *testing.T, err error, code int, reason string) {
	t.Helper()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("want close %d %q, got %v", code, reason, err)
	}
	if ce.Code != code || (reason != lcAnyReason && ce.Text != reason) {
		t.Fatalf("close = %d %q, want %d %q", ce.Code, ce.Text, code, reason)
	}
}

// lcFirstClose checks that the very next thing c reads (control frames
// aside) is the relay's close with code and reason: no data before it.
func lcFirstClose(t *testing.T, c *websocket.Conn, code int, reason string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := c.ReadMessage()
	if err == nil {
		t.Fatalf("got message %.120q, want close %d %q", msg, code, reason)
	}
	lcCheckClose(t, err, code, reason)
}

// lcDrainClose reads c until the relay's close, checking that every data
// message before it equals want; it returns how many there were.
func lcDrainClose(t *testing.T, c *websocket.Conn, want string, code int, reason string) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for n := 0; n < 1<<16; n++ {
		_, msg, err := c.ReadMessage()
		if err != nil {
			lcCheckClose(t, err, code, reason)
			return n
		}
		if string(msg) != want {
			t.Fatalf("message %d before the close is %.80q, want %.80q", n, msg, want)
		}
	}
	t.Fatal("no close after 65536 messages")
	return 0
}

func lcEnv(connID, frame string) string {
	return `{"conn_id":"` + connID + `","frame":` + frame + `}`
}

func lcNotice(connID string, code int) string {
	return fmt.Sprintf(`{"conn_id":"%s","close_code":%d}`, connID, code)
}

var lcEnvRe = regexp.MustCompile(`^\{"conn_id":"([^"]+)","frame":`)

// lcConnID sends a frame from phone and returns the conn_id under which the
// pumped binary receives it; the envelope must be exactly the expected one.
func lcConnID(t *testing.T, phone *websocket.Conn, bin *lcPump) string {
	t.Helper()
	const frame = `{"v":2,"type":"noise_init","data":"bGlmZWN5Y2xl"}`
	send(t, phone, frame)
	env := string(bin.next(t))
	m := lcEnvRe.FindStringSubmatch(env)
	if m == nil || env != lcEnv(m[1], frame) {
		t.Fatalf("binary got %.200q, want the envelope of %q", env, frame)
	}
	return m[1]
}

// lcRoundTrip checks routing both ways between a phone (gorilla, pumped)
// and its pumped binary.
func lcRoundTrip(t *testing.T, ph *lcPump, connID string, bin *lcPump, tag string) {
	t.Helper()
	up := `{"v":2,"type":"noise_msg","data":"up-` + tag + `"}`
	send(t, ph.c, up)
	if got := string(bin.next(t)); got != lcEnv(connID, up) {
		t.Fatalf("binary got %.200q, want %q", got, lcEnv(connID, up))
	}
	down := `{"v":2,"type":"noise_msg","data":"down-` + tag + `"}`
	send(t, bin.c, lcEnv(connID, down))
	if got := string(ph.next(t)); got != down {
		t.Fatalf("phone got %.200q, want %q", got, down)
	}
}

// lcRegistry is the relay's in-memory directory.
func lcRegistry(t *testing.T, tr *testRelay) *registry.Registry[Binary, Phone] {
	t.Helper()
	r, ok := tr.srv.dir.(*registry.Registry[Binary, Phone])
	if !ok {
		t.Fatalf("directory is %T", tr.srv.dir)
	}
	return r
}

// lcWaitIDs waits until the registry has live ids with a binary and grace
// ids in their grace period.
func lcWaitIDs(t *testing.T, tr *testRelay, live, grace int) {
	t.Helper()
	r := lcRegistry(t, tr)
	eventually(t, func() bool { l, g := r.Counts(); return l == live && g == grace })
}

// lcHolderConn returns the relay-side connection of the binary holding id.
func lcHolderConn(t *testing.T, tr *testRelay, id string) *peer.Conn {
	t.Helper()
	b, ok := lcRegistry(t, tr).Holder(id).(*localBinary)
	if !ok || b == nil {
		t.Fatalf("no local binary holds %q", id)
	}
	return b.conn
}

// lcConnsExcept returns the relay-side connections other than except.
func lcConnsExcept(tr *testRelay, except ...*peer.Conn) []*peer.Conn {
	tr.srv.mu.Lock()
	defer tr.srv.mu.Unlock()
	var out []*peer.Conn
next:
	for c := range tr.srv.conns {
		for _, e := range except {
			if c == e {
				continue next
			}
		}
		out = append(out, c)
	}
	return out
}

// lcWaitPhones waits until n phones are registered.
func lcWaitPhones(t *testing.T, tr *testRelay, n int64) {
	t.Helper()
	eventually(t, func() bool { _, p := tr.srv.Counts(); return p == n })
}

// lcSilentPings makes c answer pings while ignoring write errors, so that
// a pong to a relay that has already hung up cannot hide its close frame.
func lcSilentPings(c *websocket.Conn) {
	c.SetPingHandler(func(s string) error {
		c.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
		return nil
	})
}

// lcRaw is a hand-made WebSocket client on a raw TCP connection, for what
// gorilla cannot produce: stalled, fragmented and unmasked frames.
type lcRaw struct {
	nc net.Conn
	br *bufio.Reader
}

// lcDialRaw opens a TCP connection, writes the opening handshake by hand,
// followed at once by extra, and checks the 101 answer.
func lcDialRaw(t *testing.T, tr *testRelay, path string, h http.Header, extra []byte) *lcRaw {
	t.Helper()
	addr := tr.hs.Listener.Addr().String()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial tcp: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	var key [16]byte
	rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", path, addr, k)
	for name, vs := range h {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", name, v)
		}
	}
	b.WriteString("\r\n")
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(append([]byte(b.String()), extra...)); err != nil {
		t.Fatalf("write handshake: %v", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read handshake answer: %v", err)
	}
	resp.Body.Close()
	sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("handshake answer %d %v", resp.StatusCode, resp.Header)
	}
	nc.SetDeadline(time.Time{})
	return &lcRaw{nc: nc, br: br}
}

// lcFrame builds one client frame.
func lcFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var m byte
	if masked {
		m = 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, m|byte(n))
	case n < 1<<16:
		out = append(out, m|126, byte(n>>8), byte(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	key := [4]byte{0x5a, 0xc3, 0x17, 0x9e}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i&3])
	}
	return out
}

func (r *lcRaw) write(t *testing.T, b []byte) {
	t.Helper()
	r.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.nc.Write(b); err != nil {
		t.Fatalf("raw write: %v", err)
	}
}

// readFrame reads one server frame, which must be unmasked.
func (r *lcRaw) readFrame(t *testing.T, timeout time.Duration) (fin bool, op byte, payload []byte) {
	t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		t.Fatalf("raw read header: %v", err)
	}
	if h[1]&0x80 != 0 {
		t.Fatalf("server frame is masked: % x", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(r.br, e[:]); err != nil {
			t.Fatalf("raw read length: %v", err)
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(r.br, e[:]); err != nil {
			t.Fatalf("raw read length: %v", err)
		}
		n = binary.BigEndian.Uint64(e[:])
	}
	if n > 1<<20 {
		t.Fatalf("server frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r.br, payload); err != nil {
		t.Fatalf("raw read payload: %v", err)
	}
	return h[0]&0x80 != 0, h[0] & 0x0f, payload
}

// expectClose checks that the next frame is a close frame with code and
// returns its reason.
func (r *lcRaw) expectClose(t *testing.T, code int, timeout time.Duration) string {
	t.Helper()
	fin, op, p := r.readFrame(t, timeout)
	if !fin || op != 0x8 || len(p) < 2 {
		t.Fatalf("got frame fin=%v op=%#x payload %.80q, want close %d", fin, op, p, code)
	}
	if got := int(binary.BigEndian.Uint16(p)); got != code {
		t.Fatalf("close code %d (reason %q), want %d", got, p[2:], code)
	}
	return string(p[2:])
}

// ---------------------------------------------------------------------------
// §3 Registry rules

// Rule 1: first claim wins; a live incumbent (it answers the probe) keeps
// the id and its phones, the newcomer is closed 4409.
func TestLifecycleFirstClaimWins(t *testing.T) {
	tr := startRelay(t, Config{})
	const id = "lc-first-claim"
	incC := tr.binary(id)
	var pings atomic.Int32
	incC.SetPingHandler(func(s string) error {
		pings.Add(1)
		return incC.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
	})
	inc := lcPumpConn(t, incC)
	tr.waitBinaries(1)
	ph := lcPumpConn(t, tr.phone(id))
	cid := lcConnID(t, ph.c, inc)

	// The second claim gets the upgrade, then 4409 before anything else.
	second := tr.binary(id)
	lcFirstClose(t, second, 4409, "server-id already claimed")
	if pings.Load() == 0 {
		t.Error("the incumbent was not probed with a ping before the 4409")
	}

	lcRoundTrip(t, ph, cid, inc, "after-conflict")
	lcRoundTrip(t, ph, cid, inc, "again")
	inc.quiet(t, 100*time.Millisecond)
	ph.quiet(t, 0)
	if b, p := tr.srv.Counts(); b != 1 || p != 1 {
		t.Fatalf("counts = %d binaries %d phones, want 1 1", b, p)
	}
	if n := tr.srv.Stats().Takeovers.Load(); n != 0 {
		t.Fatalf("Takeovers = %d", n)
	}
}

// Rule 2: an incumbent that does not answer the probe loses the id after
// ProbeTimeout; it is closed 1011 "heartbeat timeout", its phones 4404
// "binary reclaimed server-id", and it sees no traffic.
func TestLifecycleConflictProbeTakeover(t *testing.T) {
	tr := startRelay(t, Config{CloseWait: 3 * time.Second})
	const id = "lc-takeover"
	inc := tr.binary(id) // nobody reads it while the probe runs: no pong
	tr.waitBinaries(1)
	oldPh := lcPumpConn(t, tr.phone(id))
	oldID := connIDOf(t, oldPh.c, inc)

	start := time.Now()
	nb := lcPumpConn(t, tr.binary(id))
	eventually(t, func() bool { return tr.srv.Stats().Takeovers.Load() == 1 })
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("takeover after %v, before the 300ms probe timeout", el)
	}
	oldPh.closed(t, 4404, "binary reclaimed server-id", false)
	lcWaitPhones(t, tr, 0)

	newPh := lcPumpConn(t, tr.phone(id))
	newID := lcConnID(t, newPh.c, nb)
	if newID == oldID {
		t.Fatalf("conn_id %q reused", newID)
	}
	lcRoundTrip(t, newPh, newID, nb, "new")
	// The old phone is gone: the new binary cannot reach it.
	send(t, nb.c, lcEnv(oldID, `{"v":2,"type":"noise_msg","data":"x"}`))
	eventually(t, func() bool { return tr.srv.Stats().DroppedUnknownConn.Load() == 1 })

	// The old binary: its first message is the close (the probe's ping is
	// answered silently by gorilla).
	lcFirstClose(t, inc, 1011, "heartbeat timeout")
	// Its cleanup (it has answered the close) does not release the id.
	tr.waitBinaries(1)
	lcWaitIDs(t, tr, 1, 0)
	// The new binary got nothing about the old phone.
	nb.quiet(t, 150*time.Millisecond)
	lcRoundTrip(t, newPh, newID, nb, "still")
	if b, p := tr.srv.Counts(); b != 1 || p != 1 {
		t.Fatalf("counts = %d binaries %d phones, want 1 1", b, p)
	}
}

// Rule 3a: a phone for an id nobody holds is closed 4404.
func TestLifecyclePhoneNoServer(t *testing.T) {
	tr := startRelay(t, Config{})
	ph := tr.dial("/v1/client", phoneHeaders("lc-nobody-home"))
	lcFirstClose(t, ph, 4404, "no server with that id")
	if _, p := tr.srv.Counts(); p != 0 {
		t.Fatalf("%d phones registered", p)
	}
}

// Rule 3b: MaxPhones caps the phones of an id; a freed slot can be reused.
func TestLifecycleMaxPhones(t *testing.T) {
	tr := startRelay(t, Config{MaxPhones: 2})
	const id = "lc-max-phones"
	bin := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	p1 := lcPumpConn(t, tr.phone(id))
	id1 := lcConnID(t, p1.c, bin)
	p2 := lcPumpConn(t, tr.phone(id))
	id2 := lcConnID(t, p2.c, bin)

	p3 := tr.dial("/v1/client", phoneHeaders(id))
	lcFirstClose(t, p3, 4429, "too many phones for server-id")

	// p1 leaves with a normal close; the binary hears of it (and of
	// nothing about the refused phone).
	p1.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(time.Second))
	p1.closed(t, 1000, lcAnyReason, false)
	if got := string(bin.next(t)); got != lcNotice(id1, 1000) {
		t.Fatalf("binary got %q, want %q", got, lcNotice(id1, 1000))
	}

	p4 := lcPumpConn(t, tr.phone(id))
	id4 := lcConnID(t, p4.c, bin)
	lcRoundTrip(t, p4, id4, bin, "p4")
	lcRoundTrip(t, p2, id2, bin, "p2")
	p5 := tr.dial("/v1/client", phoneHeaders(id))
	lcFirstClose(t, p5, 4429, "too many phones for server-id")
	bin.quiet(t, 50*time.Millisecond)
}

// ---------------------------------------------------------------------------
// §4 Grace period and reclaim

// Rule 4a: during grace phones stay and new ones may join; a phone frame
// gets 4404 "no server with that id"; a reclaim succeeds, evicts every phone
// of the id with 4404 "binary reclaimed server-id" without notices, and new
// phones route to the new binary.
func TestLifecycleGraceReclaim(t *testing.T) {
	const grace = time.Second
	tr := startRelay(t, Config{Grace: grace})
	const id = "lc-grace-reclaim"
	a := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	p1 := lcPumpConn(t, tr.phone(id))
	id1 := lcConnID(t, p1.c, a)
	p2 := lcPumpConn(t, tr.phone(id))
	lcConnID(t, p2.c, a)

	a.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	a.closed(t, 1000, lcAnyReason, false)
	lcWaitIDs(t, tr, 0, 1)
	left := time.Now()

	// Phones stay connected.
	p1.quiet(t, 300*time.Millisecond)
	p2.quiet(t, 0)
	// A new phone may join.
	p3 := lcPumpConn(t, tr.phone(id))
	p3.quiet(t, 50*time.Millisecond)
	// A phone frame has no session to go to, whether the phone was paired
	// with the old binary or joined during grace.
	send(t, p2.c, `{"v":2,"type":"noise_msg","data":"into-the-void"}`)
	p2.closed(t, 4404, "no server with that id", false)
	lcWaitPhones(t, tr, 2)
	p3b := lcPumpConn(t, tr.phone(id))
	send(t, p3b.c, `{"v":2,"type":"noise_init","data":"aGk="}`)
	p3b.closed(t, 4404, "no server with that id", false)
	lcWaitPhones(t, tr, 2)

	// Reclaim within grace: no 4409.
	b := lcPumpConn(t, tr.binary(id))
	lcWaitIDs(t, tr, 1, 0)
	if el := time.Since(left); el >= grace {
		t.Fatalf("test too slow: reclaim %v after release, grace is %v", el, grace)
	}
	p1.closed(t, 4404, "binary reclaimed server-id", false)
	p3.closed(t, 4404, "binary reclaimed server-id", false)
	lcWaitPhones(t, tr, 0)

	// New phones route to the new binary; it gets no notice for the old ones
	// (its first message is the new phone's frame).
	p4 := lcPumpConn(t, tr.phone(id))
	id4 := lcConnID(t, p4.c, b)
	if id4 == id1 {
		t.Fatalf("conn_id %q reused", id4)
	}
	lcRoundTrip(t, p4, id4, b, "after-reclaim")
	b.quiet(t, 200*time.Millisecond)
	p4.quiet(t, 0)
	st := tr.srv.Stats()
	if r, e := st.GraceReclaimed.Load(), st.GraceExpired.Load(); r != 1 || e != 0 {
		t.Fatalf("GraceReclaimed=%d GraceExpired=%d, want 1 0", r, e)
	}
}

// Rule 4b: with no reclaim, the phones (including one that joined during
// grace) are closed with 1000 once Grace has passed; the id is then free.
func TestLifecycleGraceExpiry(t *testing.T) {
	const grace = 300 * time.Millisecond
	tr := startRelay(t, Config{Grace: grace})
	const id = "lc-grace-expiry"
	a := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	p1 := lcPumpConn(t, tr.phone(id))
	lcConnID(t, p1.c, a)

	a.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	a.closed(t, 1000, lcAnyReason, false)
	lcWaitIDs(t, tr, 0, 1)
	left := time.Now()
	p2 := lcPumpConn(t, tr.phone(id))

	p1.closed(t, 1000, lcAnyReason, false)
	if el := time.Since(left); el < grace*3/4 {
		t.Fatalf("phone closed %v after release, grace is %v", el, grace)
	}
	p2.closed(t, 1000, lcAnyReason, false)
	lcWaitIDs(t, tr, 0, 0)

	p3 := tr.dial("/v1/client", phoneHeaders(id))
	lcFirstClose(t, p3, 4404, "no server with that id")
	if n := tr.srv.Stats().GraceExpired.Load(); n != 1 {
		t.Fatalf("GraceExpired = %d", n)
	}
}

// Rule 4c: the grace timer of a binary that has been replaced must not
// release the id or touch the new binary's phones.
func TestLifecycleGraceStaleTimer(t *testing.T) {
	const grace = 300 * time.Millisecond
	tr := startRelay(t, Config{Grace: grace})
	const id = "lc-grace-stale"
	a := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	pa := lcPumpConn(t, tr.phone(id))
	lcConnID(t, pa.c, a)
	a.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	a.closed(t, 1000, lcAnyReason, false)
	lcWaitIDs(t, tr, 0, 1)
	left := time.Now()

	b := lcPumpConn(t, tr.binary(id))
	lcWaitIDs(t, tr, 1, 0)
	pa.closed(t, 4404, "binary reclaimed server-id", false)
	lcWaitPhones(t, tr, 0)
	pb := lcPumpConn(t, tr.phone(id))
	idb := lcConnID(t, pb.c, b)

	// Past A's original grace deadline, B and its phone are untouched.
	b.quiet(t, time.Until(left.Add(grace+300*time.Millisecond)))
	pb.quiet(t, 0)
	lcRoundTrip(t, pb, idb, b, "past-stale-deadline")
	lcWaitIDs(t, tr, 1, 0)
	if n := tr.srv.Stats().GraceExpired.Load(); n != 0 {
		t.Fatalf("GraceExpired = %d", n)
	}
	// A phone joining now is paired with B, not refused.
	pc := lcPumpConn(t, tr.phone(id))
	idc := lcConnID(t, pc.c, b)
	lcRoundTrip(t, pc, idc, b, "late-phone")
}

// ---------------------------------------------------------------------------
// §6 Flow control

// Rule 5: a phone that does not read is closed 1011 "phone backlog full"
// once its queue overflows; its sibling and the binary are unaffected and
// the binary gets the close notice with 1011.
func TestLifecyclePhoneBacklogFull(t *testing.T) {
	tr := startRelay(t, Config{PhoneQueueBytes: 64 << 10})
	const id = "lc-backlog"
	bin := tr.binary(id)
	tr.waitBinaries(1)
	slow := tr.phone(id) // never read until the end
	sib := lcPumpConn(t, tr.phone(id))
	slowID := connIDOf(t, slow, bin)
	sibID := connIDOf(t, sib.c, bin)

	frame := `{"v":2,"type":"noise_msg","data":"`
	frame += strings.Repeat("A", 16<<10-len(frame)-2) + `"}`
	slowEnv := lcEnv(slowID, frame)
	sibFrame := func(i int) string { return fmt.Sprintf(`{"v":2,"type":"noise_msg","data":"sib-%d"}`, i) }

	sibSent, slowSent := 0, 0
	for slowSent < 4096 && tr.srv.Stats().BacklogCloses.Load() == 0 { // at most 64 MiB
		send(t, bin, slowEnv)
		slowSent++
		if slowSent%32 == 0 {
			send(t, bin, lcEnv(sibID, sibFrame(sibSent)))
			sibSent++
		}
	}
	eventually(t, func() bool { return tr.srv.Stats().BacklogCloses.Load() == 1 })
	t.Logf("backlog close after %d frames of 16 KiB", slowSent)
	for i := range sibSent {
		if got := string(sib.next(t)); got != sibFrame(i) {
			t.Fatalf("sibling got %q, want %q", got, sibFrame(i))
		}
	}
	for range 20 {
		send(t, bin, lcEnv(sibID, sibFrame(sibSent)))
		if got := string(sib.next(t)); got != sibFrame(sibSent) {
			t.Fatalf("sibling got %q, want %q", got, sibFrame(sibSent))
		}
		sibSent++
	}

	n := lcDrainClose(t, slow, frame, 1011, "phone backlog full")
	t.Logf("slow phone read %d whole frames before the close", n)
	if got := string(read(t, bin)); got != lcNotice(slowID, 1011) {
		t.Fatalf("binary got %.120q, want %q", got, lcNotice(slowID, 1011))
	}
	up := `{"v":2,"type":"noise_msg","data":"sib-up"}`
	send(t, sib.c, up)
	if got := string(read(t, bin)); got != lcEnv(sibID, up) {
		t.Fatalf("binary got %.120q", got)
	}
	sib.quiet(t, 0)
	if n := tr.srv.Stats().BacklogCloses.Load(); n != 1 {
		t.Fatalf("BacklogCloses = %d", n)
	}
}

// lcPhoneFlood has phone send frames on its own goroutine while the binary
// does not read, waits until the relay holds the binary's queue at its
// budget (back-pressure) and then for hold more, and finally reads every
// envelope on bin, checking each is the expected frame exactly once and in
// order.
func lcPhoneFlood(t *testing.T, tr *testRelay, id string, bin, ph *websocket.Conn, frames []string, hold time.Duration) {
	t.Helper()
	pid := connIDOf(t, ph, bin)
	bconn := lcHolderConn(t, tr, id)
	budget := tr.srv.cfg.BinaryQueueBytes

	var finished atomic.Bool
	errc := make(chan error, 1)
	go func() {
		defer finished.Store(true)
		for _, f := range frames {
			ph.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if err := ph.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	eventually(t, func() bool { return bconn.QueuedBytes() >= budget || finished.Load() })
	if finished.Load() {
		t.Log("the phone finished sending before the binary's queue filled: no back-pressure seen")
	} else {
		t.Logf("back-pressure: binary queue at %d bytes (budget %d)", bconn.QueuedBytes(), budget)
	}
	if hold > 0 {
		// Keep the binary stalled a while longer (the phone may finish
		// writing into socket buffers meanwhile).
		timer := time.NewTimer(hold)
		<-timer.C
	}

	bin.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i, f := range frames {
		_, got, err := bin.ReadMessage()
		if err != nil {
			t.Fatalf("binary read after %d of %d frames: %v", i, len(frames), err)
		}
		if string(got) != lcEnv(pid, f) {
			t.Fatalf("envelope %d of %d is %.100q, want %.100q", i, len(frames), got, lcEnv(pid, f))
		}
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("phone write: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("phone writer did not finish")
	}
	// Counted just after the frame is queued, so possibly after it arrived.
	want := int64(len(frames) + 1)
	eventually(t, func() bool { return tr.srv.Stats().FramesToBinary.Load() == want })
	expectNoMessage(t, bin, 100*time.Millisecond)
}

// Rule 6: phone-to-binary traffic is back-pressured, never dropped.
func TestLifecyclePhoneToBinaryNeverDrops(t *testing.T) {
	tr := startRelay(t, Config{BinaryQueueBytes: 8 << 10})
	const id = "lc-never-drop"
	bin := tr.binary(id)
	tr.waitBinaries(1)
	ph := tr.phone(id)
	frames := make([]string, 2000)
	for i := range frames {
		head := fmt.Sprintf(`{"v":2,"type":"noise_msg","n":%d,"data":"`, i)
		frames[i] = head + strings.Repeat("x", 4096-len(head)-2) + `"}`
	}
	lcPhoneFlood(t, tr, id, bin, ph, frames, 0)
}

// Rule 6 with §7's message deadline: a phone whose reads wait because its
// binary is slow (back-pressure) must not be closed for a "message
// timeout": every byte of its messages arrived within milliseconds; it was
// the relay that stopped reading. While the binary's queue is full, the
// phone sends in one write 64 pings (so the relay's input buffer ends in
// the middle of a control frame and it reads on "mid-message"), two small
// frames and one 5000-byte frame (more than the buffer holds); the binary
// is then held stalled for 3x MessageTimeout before it reads again.
func TestLifecycleBackpressureIsNotMessageTimeout(t *testing.T) {
	const mt = 200 * time.Millisecond
	tr := startRelay(t, Config{BinaryQueueBytes: 8 << 10, MessageTimeout: mt})
	const id = "lc-backpressure-deadline"
	bin := tr.binary(id)
	tr.waitBinaries(1)
	bconn := lcHolderConn(t, tr, id)

	// p0 stalls the binary: it floods it until the relay's writer to the
	// binary is stuck with the queue at budget and p0's reader waits
	// (nothing more is forwarded for 100ms).
	p0 := tr.phone(id)
	p0id := connIDOf(t, p0, bin)
	big := `{"v":2,"type":"noise_msg","data":"`
	big += strings.Repeat("B", 16<<10-len(big)-2) + `"}`
	stop := make(chan struct{})
	total := make(chan int, 1)
	go func() {
		n := 0
		defer func() { total <- n }()
		for ; n < 4096; n++ { // at most 64 MiB
			select {
			case <-stop:
				return
			default:
			}
			p0.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if p0.WriteMessage(websocket.TextMessage, []byte(big)) != nil {
				return
			}
		}
	}()
	var lastFrames int64 = -1
	var since time.Time
	eventually(t, func() bool {
		f := tr.srv.Stats().FramesToBinary.Load()
		if f != lastFrames || bconn.QueuedBytes() < tr.srv.cfg.BinaryQueueBytes {
			lastFrames, since = f, time.Now()
			return false
		}
		return time.Since(since) >= 100*time.Millisecond
	})
	close(stop)

	r := lcDialRaw(t, tr, "/v1/client", phoneHeaders(id), nil)
	lcWaitPhones(t, tr, 2)
	fa, fb := `{"v":2,"n":"a"}`, `{"v":2,"n":"b"}`
	fc := `{"v":2,"type":"noise_msg","data":"`
	fc += strings.Repeat("C", 5000-len(fc)-2) + `"}`
	const pings = 64 // 8.4 KB of pings: the relay's input buffer fills mid-ping
	var batch []byte
	for i := range pings {
		batch = append(batch, lcFrame(true, 0x9, []byte(fmt.Sprintf("%03d", i)+strings.Repeat("P", 122)), true)...)
	}
	batch = append(batch, lcFrame(true, 0x1, []byte(fa), true)...)
	batch = append(batch, lcFrame(true, 0x1, []byte(fb), true)...)
	batch = append(batch, lcFrame(true, 0x1, []byte(fc), true)...)
	r.write(t, batch)
	// Pongs may be coalesced (RFC 6455 §5.5.3: answering the latest ping is
	// enough), but they answer pings in order and the last ping is answered.
	for last := -1; last < pings-1; {
		fin, op, p := r.readFrame(t, 5*time.Second)
		var n int
		if !fin || op != 0xA || len(p) != 125 || string(p[3:]) != strings.Repeat("P", 122) {
			t.Fatalf("got fin=%v op=%#x %.40q, want a pong", fin, op, p)
		}
		fmt.Sscanf(string(p[:3]), "%d", &n)
		if n <= last {
			t.Fatalf("pong for ping %d after pong for ping %d", n, last)
		}
		last = n
	}
	stall := time.NewTimer(3 * mt) // the binary stays stalled this long
	<-stall.C

	want := []string{fa, fb, fc}
	var rid string
	got0, gotR, sent := 0, 0, -1
	bin.SetReadDeadline(time.Now().Add(15 * time.Second))
	for i := 0; i < 4096+len(want) && (got0 != sent || gotR != len(want)); i++ {
		if sent < 0 {
			select {
			case sent = <-total:
			default:
			}
		}
		_, env, err := bin.ReadMessage()
		if err != nil {
			t.Fatalf("binary read: %v", err)
		}
		m := lcEnvRe.FindStringSubmatch(string(env))
		switch {
		case m != nil && m[1] == p0id:
			if string(env) != lcEnv(p0id, big) {
				t.Fatalf("p0 envelope %.80q", env)
			}
			got0++
		case m != nil && (rid == "" || m[1] == rid):
			rid = m[1]
			if string(env) != lcEnv(rid, want[gotR]) {
				t.Fatalf("phone envelope %d is %.80q, want %.80q", gotR, env, lcEnv(rid, want[gotR]))
			}
			gotR++
		default:
			t.Fatalf("binary got %.120q after %d of the stalled phone's 3 frames", env, gotR)
		}
		if sent < 0 && got0 > 0 {
			select {
			case sent = <-total:
			default:
			}
		}
	}
	if got0 != sent || gotR != len(want) {
		t.Fatalf("binary got %d/%d and %d/%d frames", got0, sent, gotR, len(want))
	}
	t.Logf("p0 sent %d frames of 16 KiB", sent)
	down := `{"v":2,"n":"down"}`
	send(t, bin, lcEnv(rid, down))
	if fin, op, p := r.readFrame(t, 5*time.Second); !fin || op != 0x1 || string(p) != down {
		t.Fatalf("phone got fin=%v op=%#x %.80q, want %q", fin, op, p, down)
	}
}

// ---------------------------------------------------------------------------
// §7 Liveness, limits, shutdown

// Rule 7a: a phone that never answers pings is closed 1011 "heartbeat
// timeout"; its binary gets the notice with 1011.
func TestLifecycleHeartbeatPhone(t *testing.T) {
	tr := startRelay(t, Config{HeartbeatInterval: 150 * time.Millisecond, HeartbeatTimeout: 150 * time.Millisecond,
		CloseWait: 2 * time.Second})
	const id = "lc-hb-phone"
	bin := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	start := time.Now()
	ph := tr.phone(id)
	lcSilentPings(ph)
	pid := lcConnID(t, ph, bin)
	pconns := lcConnsExcept(tr, lcHolderConn(t, tr, id))
	if len(pconns) != 1 {
		t.Fatalf("%d phone connections", len(pconns))
	}
	eventually(t, func() bool { return !pconns[0].Open() })
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("phone closed after %v, before interval+timeout", el)
	}
	lcFirstClose(t, ph, 1011, "heartbeat timeout")
	if got := string(bin.next(t)); got != lcNotice(pid, 1011) {
		t.Fatalf("binary got %q, want %q", got, lcNotice(pid, 1011))
	}
	bin.quiet(t, 100*time.Millisecond)
	if b, _ := tr.srv.Counts(); b != 1 {
		t.Fatalf("%d binaries", b)
	}
}

// Rule 7b: a binary that never answers pings is closed 1011 "heartbeat
// timeout"; its phones stay (grace).
func TestLifecycleHeartbeatBinaryGrace(t *testing.T) {
	tr := startRelay(t, Config{HeartbeatInterval: 150 * time.Millisecond, HeartbeatTimeout: 150 * time.Millisecond,
		CloseWait: 2 * time.Second, Grace: 2 * time.Second})
	const id = "lc-hb-binary"
	bin := tr.binary(id)
	lcSilentPings(bin)
	tr.waitBinaries(1)
	ph := lcPumpConn(t, tr.phone(id)) // reads, so it answers pings
	// One read of bin; after that nobody reads it, so it never pongs.
	connIDOf(t, ph.c, bin)
	bconn := lcHolderConn(t, tr, id)
	eventually(t, func() bool { return !bconn.Open() })
	lcFirstClose(t, bin, 1011, "heartbeat timeout")
	lcWaitIDs(t, tr, 0, 1)
	ph.quiet(t, 500*time.Millisecond) // several heartbeats, well inside grace
	if _, p := tr.srv.Counts(); p != 1 {
		t.Fatalf("%d phones", p)
	}
}

// Rule 7c: peers that answer pings stay connected across many heartbeats.
func TestLifecycleHeartbeatLiveStays(t *testing.T) {
	tr := startRelay(t, Config{HeartbeatInterval: 150 * time.Millisecond, HeartbeatTimeout: 150 * time.Millisecond})
	const id = "lc-hb-live"
	count := func(c *websocket.Conn, n *atomic.Int32) {
		c.SetPingHandler(func(s string) error {
			n.Add(1)
			return c.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
		})
	}
	var bp, pp atomic.Int32
	bc := tr.binary(id)
	count(bc, &bp)
	bin := lcPumpConn(t, bc)
	tr.waitBinaries(1)
	pc := tr.phone(id)
	count(pc, &pp)
	ph := lcPumpConn(t, pc)
	pid := lcConnID(t, ph.c, bin)
	eventually(t, func() bool { return bp.Load() >= 6 && pp.Load() >= 6 })
	bin.quiet(t, 0)
	ph.quiet(t, 0)
	lcRoundTrip(t, ph, pid, bin, "alive")
	if b, p := tr.srv.Counts(); b != 1 || p != 1 {
		t.Fatalf("counts %d %d", b, p)
	}
}

// Rule 7d: the relay answers a client's ping with a pong carrying the same
// payload, on both legs.
func TestLifecyclePongEchoesPing(t *testing.T) {
	tr := startRelay(t, Config{})
	const id = "lc-pong"
	pongs := func(c *websocket.Conn) chan string {
		ch := make(chan string, 8)
		c.SetPongHandler(func(s string) error { ch <- s; return nil })
		return ch
	}
	bc := tr.binary(id)
	bpong := pongs(bc)
	lcPumpConn(t, bc)
	tr.waitBinaries(1)
	pc := tr.phone(id)
	ppong := pongs(pc)
	lcPumpConn(t, pc)
	payloads := []string{"lc-ping-1", "", "\x00\xff binary \x80 payload", strings.Repeat("p", 125)}
	for _, leg := range []struct {
		c  *websocket.Conn
		ch chan string
	}{{bc, bpong}, {pc, ppong}} {
		for _, want := range payloads {
			if err := leg.c.WriteControl(websocket.PingMessage, []byte(want), time.Now().Add(time.Second)); err != nil {
				t.Fatalf("ping: %v", err)
			}
			select {
			case got := <-leg.ch:
				if got != want {
					t.Fatalf("pong %q, want %q", got, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no pong for %q", want)
			}
		}
	}
}

// Rule 8a: the read cap is per message: MaxFrameBytes passes, one more byte
// closes 1009 "message too big" with a 1009 notice.
func TestLifecycleReadCap(t *testing.T) {
	tr := startRelay(t, Config{MaxFrameBytes: 1024})
	const id = "lc-read-cap"
	bin := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	ph := lcPumpConn(t, tr.phone(id))
	pid := lcConnID(t, ph.c, bin)

	exact := `"` + strings.Repeat("a", 1022) + `"`
	send(t, ph.c, exact)
	if got := string(bin.next(t)); got != lcEnv(pid, exact) {
		t.Fatalf("binary got %.80q", got)
	}
	send(t, ph.c, `"`+strings.Repeat("a", 1023)+`"`)
	ph.closed(t, 1009, "message too big", false)
	if got := string(bin.next(t)); got != lcNotice(pid, 1009) {
		t.Fatalf("binary got %q, want %q", got, lcNotice(pid, 1009))
	}

	// The cap applies to the binary's leg too; its phones then wait in grace.
	ph2 := lcPumpConn(t, tr.phone(id))
	pid2 := lcConnID(t, ph2.c, bin)
	down := `"` + strings.Repeat("d", 1024-len(lcEnv(pid2, `""`))) + `"`
	send(t, bin.c, lcEnv(pid2, down)) // an envelope of exactly 1024 bytes
	if got := string(ph2.next(t)); got != down {
		t.Fatalf("phone got %.80q", got)
	}
	send(t, bin.c, lcEnv(pid2, down+" "))
	bin.closed(t, 1009, "message too big", false)
	lcWaitIDs(t, tr, 0, 1)
	ph2.quiet(t, 100*time.Millisecond)
}

// Rule 8b: a fragmented message is reassembled (control frames may come
// between fragments) and capped on its total size.
func TestLifecycleReadCapFragmented(t *testing.T) {
	tr := startRelay(t, Config{MaxFrameBytes: 1024})
	const id = "lc-read-cap-frag"
	bin := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	r := lcDialRaw(t, tr, "/v1/client", phoneHeaders(id), nil)
	lcWaitPhones(t, tr, 1)

	head := `{"v":2,"type":"noise_msg","data":"`
	msg := head + strings.Repeat("f", 1024-len(head)-2) + `"}` // exactly the cap
	r.write(t, lcFrame(false, 0x1, []byte(msg[:300]), true))
	r.write(t, lcFrame(true, 0x9, []byte("mid-message"), true))
	r.write(t, append(lcFrame(false, 0x0, []byte(msg[300:301]), true),
		lcFrame(false, 0x0, nil, true)...))
	r.write(t, lcFrame(true, 0x0, []byte(msg[301:]), true))
	if fin, op, p := r.readFrame(t, 5*time.Second); !fin || op != 0xA || string(p) != "mid-message" {
		t.Fatalf("got fin=%v op=%#x %q, want the pong", fin, op, p)
	}
	env := string(bin.next(t))
	m := lcEnvRe.FindStringSubmatch(env)
	if m == nil || env != lcEnv(m[1], msg) {
		t.Fatalf("binary got %.120q", env)
	}
	pid := m[1]

	// 3 x 400 bytes: every fragment is under the cap, the message is not.
	over := `"` + strings.Repeat("o", 1198) + `"`
	r.write(t, lcFrame(false, 0x1, []byte(over[:400]), true))
	r.write(t, lcFrame(false, 0x0, []byte(over[400:800]), true))
	r.write(t, lcFrame(true, 0x0, []byte(over[800:]), true))
	if reason := r.expectClose(t, 1009, 5*time.Second); reason != "message too big" {
		t.Fatalf("close reason %q", reason)
	}
	if got := string(bin.next(t)); got != lcNotice(pid, 1009) {
		t.Fatalf("binary got %q, want %q", got, lcNotice(pid, 1009))
	}
}

// Rule 9a: a message that stops arriving mid-way is cut off after
// MessageTimeout with 1008, and the connection is unregistered.
func TestLifecycleMessageDeadline(t *testing.T) {
	tr := startRelay(t, Config{MessageTimeout: 200 * time.Millisecond, MaxPhones: 1})
	const id = "lc-msg-deadline"
	bin := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)

	full := lcFrame(true, 0x1, []byte(`{"v":2,"type":"noise_msg","data":"`+strings.Repeat("s", 100)+`"}`), true)
	cases := []struct {
		name  string
		extra []byte // sent with the handshake
		stall []byte // sent after a complete first frame
	}{
		{"partial payload", nil, full[:20]},
		{"partial header", nil, full[:1]},
		{"stall right after handshake", full[:3], nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := lcDialRaw(t, tr, "/v1/client", phoneHeaders(id), tc.extra)
			lcWaitPhones(t, tr, 1)
			var pid string
			if tc.stall != nil {
				r.write(t, lcFrame(true, 0x1, []byte(`{"v":2}`), true))
				env := string(bin.next(t))
				m := lcEnvRe.FindStringSubmatch(env)
				if m == nil || env != lcEnv(m[1], `{"v":2}`) {
					t.Fatalf("binary got %q", env)
				}
				pid = m[1]
				r.write(t, tc.stall)
			}
			start := time.Now()
			reason := r.expectClose(t, 1008, 3*time.Second)
			el := time.Since(start)
			t.Logf("closed 1008 %q after %v", reason, el)
			if el < 150*time.Millisecond || el > 1200*time.Millisecond {
				t.Fatalf("closed after %v, want about 200ms", el)
			}
			r.nc.Close()
			lcWaitPhones(t, tr, 0)
			got := string(bin.next(t))
			if pid != "" && got != lcNotice(pid, 1008) {
				t.Fatalf("binary got %q, want %q", got, lcNotice(pid, 1008))
			}
			if pid == "" && !regexp.MustCompile(`^\{"conn_id":"[^"]+","close_code":1008\}$`).MatchString(got) {
				t.Fatalf("binary got %q, want a 1008 notice", got)
			}
			// Not registered any more: with MaxPhones 1 another phone fits.
			ph := lcPumpConn(t, tr.phone(id))
			lcRoundTrip(t, ph, lcConnID(t, ph.c, bin), bin, "after-stall")
			ph.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
			ph.closed(t, 1000, lcAnyReason, false)
			lcWaitPhones(t, tr, 0)
			bin.next(t) // its close notice
		})
	}

	// The deadline runs from a message's first byte: a message trickling in
	// pieces is fine if it completes in time, cut off if it does not, and
	// an idle connection (no message begun) is never cut off.
	t.Run("trickle", func(t *testing.T) {
		ph := lcPumpConn(t, tr.phone(id))
		ph.quiet(t, 3*200*time.Millisecond) // idle for 3x MessageTimeout
		pid := lcConnID(t, ph.c, bin)
		ph.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		ph.closed(t, 1000, lcAnyReason, false)
		if got := string(bin.next(t)); got != lcNotice(pid, 1000) {
			t.Fatalf("binary got %q", got)
		}
		lcWaitPhones(t, tr, 0)

		r := lcDialRaw(t, tr, "/v1/client", phoneHeaders(id), nil)
		lcWaitPhones(t, tr, 1)
		msg := `{"v":2,"type":"noise_msg","data":"` + strings.Repeat("t", 60) + `"}`
		f := lcFrame(true, 0x1, []byte(msg), true)
		// Deliberate pacing of the pieces (not a wait for a condition).
		pace := func(d time.Duration) { <-time.After(d) }
		// Three gaps of 40ms: the message completes in time.
		for i, piece := range [][]byte{f[:1], f[1:10], f[10:40], f[40:]} {
			if i > 0 {
				pace(40 * time.Millisecond)
			}
			r.write(t, piece)
		}
		env := string(bin.next(t))
		m := lcEnvRe.FindStringSubmatch(env)
		if m == nil || env != lcEnv(m[1], msg) {
			t.Fatalf("binary got %q", env)
		}
		start := time.Now()
		// It never completes within 200ms of its first byte.
		for _, piece := range [][]byte{f[:10], f[10:20], f[20:30]} {
			r.write(t, piece)
			pace(90 * time.Millisecond)
		}
		r.expectClose(t, 1008, 3*time.Second)
		if el := time.Since(start); el < 150*time.Millisecond || el > 1200*time.Millisecond {
			t.Fatalf("closed %v after the first byte, want about 200ms", el)
		}
		r.nc.Close()
		if got := string(bin.next(t)); got != lcNotice(m[1], 1008) {
			t.Fatalf("binary got %q", got)
		}
		lcWaitPhones(t, tr, 0)
	})

	// A binary that stalls mid-message is dropped the same way and its id
	// goes into grace.
	t.Run("binary", func(t *testing.T) {
		r := lcDialRaw(t, tr, "/v1/server", binaryHeaders("lc-msg-deadline-bin"), nil)
		lcWaitIDs(t, tr, 2, 0)
		r.write(t, full[:20])
		start := time.Now()
		r.expectClose(t, 1008, 3*time.Second)
		if el := time.Since(start); el > 1200*time.Millisecond {
			t.Fatalf("closed after %v", el)
		}
		r.nc.Close()
		lcWaitIDs(t, tr, 1, 1)
	})
}

// Rule 9b: an unmasked client frame is a protocol error: 1002.
func TestLifecycleUnmaskedFrame(t *testing.T) {
	tr := startRelay(t, Config{})
	const id = "lc-unmasked"
	bin := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	r := lcDialRaw(t, tr, "/v1/client", phoneHeaders(id), nil)
	lcWaitPhones(t, tr, 1)
	r.write(t, lcFrame(true, 0x1, []byte(`{"v":2}`), true))
	env := string(bin.next(t))
	m := lcEnvRe.FindStringSubmatch(env)
	if m == nil {
		t.Fatalf("binary got %q", env)
	}
	r.write(t, lcFrame(true, 0x1, []byte(`{"v":2,"type":"noise_msg"}`), false))
	r.expectClose(t, 1002, 5*time.Second)
	if got := string(bin.next(t)); got != lcNotice(m[1], 1002) {
		t.Fatalf("binary got %q, want %q", got, lcNotice(m[1], 1002))
	}
	lcWaitPhones(t, tr, 0)
}

// Rule 10: Shutdown closes every binary and phone with 1001 "shutting
// down", returns nil, and new dials are refused. Here the phones belong to
// an id in its grace period (see TestLifecycleShutdownPhonesOfLiveBinary for
// phones whose binary is live).
func TestLifecycleShutdown(t *testing.T) {
	tr := startRelay(t, Config{Grace: time.Minute})
	b1 := lcPumpConn(t, tr.binary("lc-shut-1"))
	b2 := lcPumpConn(t, tr.binary("lc-shut-2"))
	bg := lcPumpConn(t, tr.binary("lc-shut-grace"))
	tr.waitBinaries(3)
	p1 := lcPumpConn(t, tr.phone("lc-shut-grace"))
	lcRoundTrip(t, p1, lcConnID(t, p1.c, bg), bg, "pre")
	silent := tr.phone("lc-shut-grace") // never reads: never answers the close
	bg.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	bg.closed(t, 1000, lcAnyReason, false)
	lcWaitIDs(t, tr, 2, 1)
	p2 := lcPumpConn(t, tr.phone("lc-shut-grace")) // joined during grace

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	for _, p := range []*lcPump{b1, b2, p1, p2} {
		p.closed(t, 1001, "shutting down", false)
	}
	lcFirstClose(t, silent, 1001, "shutting down")
	if b, p := tr.srv.Counts(); b != 0 || p != 0 {
		t.Fatalf("counts after shutdown %d %d", b, p)
	}
	for _, d := range []struct {
		path string
		h    http.Header
	}{{"/v1/server", binaryHeaders("lc-shut-3")}, {"/v1/client", phoneHeaders("lc-shut-grace")}} {
		c, resp, err := tr.tryDial(d.path, d.h)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s after shutdown succeeded", d.path)
		}
		if resp != nil && resp.StatusCode == http.StatusSwitchingProtocols {
			t.Fatalf("dial %s after shutdown upgraded", d.path)
		}
		if resp != nil {
			t.Logf("dial %s after shutdown: HTTP %d", d.path, resp.StatusCode)
		}
	}
}

// Rule 10 for phones whose binary is live: they too must get 1001
// "shutting down". (Their binaries may hear of them first: a close notice
// for a phone the relay closed is allowed, so binaries may see data before
// their own 1001.)
func TestLifecycleShutdownPhonesOfLiveBinary(t *testing.T) {
	for round := range 5 {
		tr := startRelay(t, Config{})
		var bins, phones []*lcPump
		for i := range 8 {
			id := fmt.Sprintf("lc-shut-live-%d-%d", round, i)
			bins = append(bins, lcPumpConn(t, tr.binary(id)))
			tr.waitBinaries(int64(i + 1))
			for range 3 {
				phones = append(phones, lcPumpConn(t, tr.phone(id)))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := tr.srv.Shutdown(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
		for _, p := range bins {
			p.closed(t, 1001, "shutting down", true)
		}
		for _, p := range phones {
			p.closed(t, 1001, "shutting down", false)
		}
	}
}

// Rule 7e: an idle pair survives heartbeats and the write deadlines set for
// them. Lone frames (what a person sends) go both ways after pauses longer
// than a ping plus the write timeout, repeatedly; gorilla answers the pings.
func TestLifecycleIdlePairLoneFrames(t *testing.T) {
	cfg := Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 2 * time.Second, WriteTimeout: 40 * time.Millisecond}
	tr := startRelay(t, cfg)
	const id = "lc-idle-lone"
	bin := lcPumpConn(t, tr.binary(id))
	tr.waitBinaries(1)
	ph := lcPumpConn(t, tr.phone(id))
	pid := lcConnID(t, ph.c, bin)
	for i := range 4 {
		// Several pings and many write timeouts pass with nothing else sent.
		bin.quiet(t, 3*cfg.HeartbeatInterval+4*cfg.WriteTimeout)
		ph.quiet(t, 0)
		lcRoundTrip(t, ph, pid, bin, fmt.Sprint("idle-", i))
	}
	if b, p := tr.srv.Counts(); b != 1 || p != 1 {
		t.Fatalf("counts %d %d", b, p)
	}
}
