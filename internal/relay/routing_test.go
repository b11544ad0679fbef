package relay

// Routing contract tests: the header gate (§2), conn_ids (§3), the routing
// envelope in both directions (§5), close directives and notices (§5),
// malformed envelopes (§5), push wakes (§5/§8), /healthz (§9) and the
// text-only rule (§11). Every test dials the relay over real sockets on
// 127.0.0.1 with gorilla's client and asserts exact bytes, close codes and
// reasons. Every read goes through read (or expectOnlyClose), which fails
// on any opcode other than text.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// ---- helpers ---------------------------------------------------------------

// rtHdr is one raw request header line, written exactly as given.
type rtHdr struct{ name, value string }

// rtRawResult is what the relay answered to a raw opening handshake.
type rtRawResult struct {
	status int
	header http.Header
	body   []byte
}

// rawUpgrade sends a WebSocket opening handshake for path with exactly the
// extra headers hs (names as given, e.g. lower-case; an empty value is sent
// as an empty header line) and returns the response. For a 101 the body is
// not read and the connection is dropped.
func rtUpgrade(t *testing.T, tr *testRelay, path string, hs []rtHdr) rtRawResult {
	t.Helper()
	addr := strings.TrimPrefix(tr.hs.URL, "http://")
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nhost: %s\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"+
		"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n", path, addr)
	for _, h := range hs {
		fmt.Fprintf(&b, "%s: %s\r\n", h.name, h.value)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(nc, b.String()); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	res := rtRawResult{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return res
	}
	res.body, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return res
}

// without returns hs minus its i-th header.
func rtWithout(hs []rtHdr, i int) []rtHdr {
	out := append([]rtHdr(nil), hs[:i]...)
	return append(out, hs[i+1:]...)
}

// withValue returns a copy of hs with the i-th header's value set to v.
func rtWithValue(hs []rtHdr, i int, v string) []rtHdr {
	out := append([]rtHdr(nil), hs...)
	out[i].value = v
	return out
}

func rtBinaryHeaders(id string) []rtHdr {
	return []rtHdr{{"x-pyrycode-server", id}, {"x-pyrycode-version", "0.11.0"}, {"user-agent", "pyry/0.11.0"}}
}

func rtPhoneHeaders(id string) []rtHdr {
	return []rtHdr{{"x-pyrycode-server", id}, {"x-pyrycode-token", "secret-device-token"},
		{"user-agent", "pyrycode-mobile/1.0.0"}}
}

// connCount is the number of upgraded connections the server still runs.
// A connection leaves this set only after its goroutine has finished,
// including sending any close notice.
func (tr *testRelay) rtConnCount() int {
	tr.srv.mu.Lock()
	defer tr.srv.mu.Unlock()
	return len(tr.srv.conns)
}

func (tr *testRelay) rtWaitConns(n int) {
	tr.t.Helper()
	eventually(tr.t, func() bool { return tr.rtConnCount() == n })
}

// phoneWith connects a phone with a custom dialer and waits for its
// registration.
func (tr *testRelay) rtPhoneWith(d websocket.Dialer, id string) *websocket.Conn {
	tr.t.Helper()
	_, before := tr.srv.Counts()
	d.HandshakeTimeout = 5 * time.Second
	c, resp, err := d.Dial(tr.url+"/v1/client", phoneHeaders(id))
	if err != nil {
		tr.t.Fatalf("dial phone: %v (resp %v)", err, resp)
	}
	tr.t.Cleanup(func() { c.Close() })
	eventually(tr.t, func() bool { _, n := tr.srv.Counts(); return n > before })
	return c
}

// expectMsg reads the next message (which must be text) and compares it
// byte for byte.
func rtExpect(t *testing.T, c *websocket.Conn, want string) {
	t.Helper()
	if got := string(read(t, c)); got != want {
		t.Fatalf("got  %q\nwant %q", rtTrunc(got), rtTrunc(want))
	}
}

func rtTrunc(s string) string {
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// expectOnlyClose checks that the very next thing on c is a close frame with
// code and reason: no data message may come first.
func rtExpectOnlyClose(t *testing.T, c *websocket.Conn, code int, reason string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	op, msg, err := c.ReadMessage()
	if err == nil {
		t.Fatalf("got message (opcode %d) %q, want close %d %q", op, rtTrunc(string(msg)), code, reason)
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("want close %d %q, got %v", code, reason, err)
	}
	if ce.Code != code || ce.Text != reason {
		t.Fatalf("close = %d %q, want %d %q", ce.Code, ce.Text, code, reason)
	}
}

// closeWith sends a close frame with code and reason from c.
func rtCloseWith(t *testing.T, c *websocket.Conn, code int, reason string) {
	t.Helper()
	err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason),
		time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatalf("write close: %v", err)
	}
}

func rtSendBinaryOp(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.BinaryMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// env is the envelope the relay must produce for a phone frame.
func rtEnv(connID, frame string) string {
	return `{"conn_id":"` + connID + `","frame":` + frame + `}`
}

// notice is the exact close notice for connID.
func rtNotice(connID string, code int) string {
	return fmt.Sprintf(`{"conn_id":"%s","close_code":%d}`, connID, code)
}

// rtStats is a copy of the counters these tests look at.
type rtStats struct {
	Malformed, Unknown, BinaryOp, Replaced int64
	PushReq, PushMal, PushDrop             int64
}

func rtSnap(s *Stats) rtStats {
	return rtStats{
		Malformed: s.DroppedMalformed.Load(), Unknown: s.DroppedUnknownConn.Load(),
		BinaryOp: s.DroppedBinaryOp.Load(), Replaced: s.CloseCodeReplaced.Load(),
		PushReq: s.PushRequested.Load(), PushMal: s.PushMalformed.Load(), PushDrop: s.PushDropped.Load(),
	}
}

var rtConnIDRe = regexp.MustCompile(`^c-[0-9a-f]{16}$`)

// ---- §2 header gate --------------------------------------------------------

// rtAssertRefused checks that the request got status (no upgrade) and, for
// a 400, an empty body.
func rtAssertRefused(t *testing.T, what string, res rtRawResult, status int) {
	t.Helper()
	if res.status != status {
		t.Errorf("%s: status %d, want %d", what, res.status, status)
		return
	}
	if status == http.StatusBadRequest && len(res.body) != 0 {
		t.Errorf("%s: body %q, want empty", what, res.body)
	}
}

func TestRoutingHeaderGateServer(t *testing.T) {
	tr := startRelay(t, Config{})
	full := rtBinaryHeaders("srv-gate")
	for i, h := range full {
		rtAssertRefused(t, "missing "+h.name, rtUpgrade(t, tr, "/v1/server", rtWithout(full, i)), 400)
		rtAssertRefused(t, "empty "+h.name, rtUpgrade(t, tr, "/v1/server", rtWithValue(full, i, "")), 400)
	}
	if b, p := tr.srv.Counts(); b != 0 || p != 0 || tr.rtConnCount() != 0 {
		t.Fatalf("after refusals: counts %d/%d conns %d, want nothing registered", b, p, tr.rtConnCount())
	}
	if live, grace := tr.srv.dir.Counts(); live != 0 || grace != 0 {
		t.Fatalf("directory holds %d live, %d grace ids", live, grace)
	}
	// Positive control: the same lower-case headers, complete, upgrade.
	if res := rtUpgrade(t, tr, "/v1/server", full); res.status != http.StatusSwitchingProtocols {
		t.Fatalf("complete lower-case headers: status %d, want 101", res.status)
	}
	upper := []rtHdr{{"X-PYRYCODE-SERVER", "srv-gate-2"}, {"X-PYRYCODE-VERSION", "0.11.0"}, {"USER-AGENT", "pyry/0.11.0"}}
	if res := rtUpgrade(t, tr, "/v1/server", upper); res.status != http.StatusSwitchingProtocols {
		t.Fatalf("complete upper-case headers: status %d, want 101", res.status)
	}
}

func TestRoutingHeaderGateClient(t *testing.T) {
	tr := startRelay(t, Config{})
	tr.binary("srv-gate")
	tr.waitBinaries(1)
	full := rtPhoneHeaders("srv-gate")
	for i, h := range full {
		rtAssertRefused(t, "missing "+h.name, rtUpgrade(t, tr, "/v1/client", rtWithout(full, i)), 400)
		rtAssertRefused(t, "empty "+h.name, rtUpgrade(t, tr, "/v1/client", rtWithValue(full, i, "")), 400)
	}
	if b, p := tr.srv.Counts(); b != 1 || p != 0 || tr.rtConnCount() != 1 {
		t.Fatalf("after refusals: counts %d/%d conns %d, want only the binary", b, p, tr.rtConnCount())
	}
	// Positive control: complete lower-case headers upgrade and register.
	if res := rtUpgrade(t, tr, "/v1/client", full); res.status != http.StatusSwitchingProtocols {
		t.Fatalf("complete lower-case headers: status %d, want 101", res.status)
	}
}

func TestRoutingServerIDValidation(t *testing.T) {
	tr := startRelay(t, Config{})
	bad := []string{
		".abc", "-abc", "_abc", ":abc",
		"a" + strings.Repeat("b", 128), // 129 chars
		"a b", "a/b", "a\\b", "a,b", "a;b", "a+b", "a@b", "a%2Fb", "a\"b",
		"caf\u00e9", "\u65e5\u672c", "\u00e9abc",
	}
	for _, id := range bad {
		rtAssertRefused(t, fmt.Sprintf("server %q", id), rtUpgrade(t, tr, "/v1/server", rtBinaryHeaders(id)), 400)
		rtAssertRefused(t, fmt.Sprintf("client %q", id), rtUpgrade(t, tr, "/v1/client", rtPhoneHeaders(id)), 400)
	}
	// Empty ids (the header present with no value) are the header gate's
	// "empty" case; check them here too for both endpoints.
	rtAssertRefused(t, "server empty id", rtUpgrade(t, tr, "/v1/server", rtBinaryHeaders("")), 400)
	rtAssertRefused(t, "client empty id", rtUpgrade(t, tr, "/v1/client", rtPhoneHeaders("")), 400)
	if b, p := tr.srv.Counts(); b != 0 || p != 0 || tr.rtConnCount() != 0 {
		t.Fatalf("after refusals: counts %d/%d conns %d", b, p, tr.rtConnCount())
	}

	good := []string{
		"A" + strings.Repeat("z", 127), // 128 chars
		"3f2b8c1e-9a4d-4f6b-8c2e-1d5a7b9c0e4f",
		"a",
		"0A._:-z",
	}
	for i, id := range good {
		tr.binary(id)
		tr.waitBinaries(int64(i + 1))
		tr.phone(id) // registers: the id is accepted on /v1/client too
	}
}

func TestRoutingUnknownPaths(t *testing.T) {
	tr := startRelay(t, Config{})
	for _, p := range []string{"/", "/v1", "/v1/", "/v1/server/x", "/v1/server/", "/v1/client/", "/v2/client",
		"/v2/server", "/V1/SERVER", "/healthz/x"} {
		rtAssertRefused(t, "binary headers "+p, rtUpgrade(t, tr, p, rtBinaryHeaders("srv-404")), 404)
		rtAssertRefused(t, "phone headers "+p, rtUpgrade(t, tr, p, rtPhoneHeaders("srv-404")), 404)
	}
	if b, p := tr.srv.Counts(); b != 0 || p != 0 || tr.rtConnCount() != 0 {
		t.Fatalf("counts %d/%d conns %d", b, p, tr.rtConnCount())
	}
}

// ---- §3 conn_ids -----------------------------------------------------------

func TestRoutingConnIDs(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-ids")
	other := tr.binary("srv-ids-2")
	tr.waitBinaries(2)
	seen := map[string]bool{}
	check := func(id string) {
		t.Helper()
		if !rtConnIDRe.MatchString(id) {
			t.Fatalf("conn_id %q does not match %s", id, rtConnIDRe)
		}
		if seen[id] {
			t.Fatalf("conn_id %q handed out twice", id)
		}
		seen[id] = true
	}
	phones := make([]*websocket.Conn, 6)
	ids := make([]string, 6)
	for i := range phones {
		phones[i] = tr.phone("srv-ids")
		ids[i] = connIDOf(t, phones[i], bin)
		check(ids[i])
	}
	// The id stays the same for the life of the connection.
	for i, ph := range phones {
		if got := connIDOf(t, ph, bin); got != ids[i] {
			t.Fatalf("phone %d: conn_id changed from %s to %s", i, ids[i], got)
		}
	}
	// Phones of another server-id draw from the same never-reused space.
	for range 3 {
		check(connIDOf(t, tr.phone("srv-ids-2"), other))
	}
	// A phone that reconnects gets a new id.
	rtCloseWith(t, phones[0], 1000, "")
	rtExpect(t, bin, rtNotice(ids[0], 1000))
	again := tr.phone("srv-ids")
	check(connIDOf(t, again, bin))
}

// ---- §5 byte-exact routing -------------------------------------------------

func TestRoutingPhoneToBinaryByteExact(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-exact")
	tr.waitBinaries(1)
	ph := tr.phone("srv-exact")
	id := connIDOf(t, ph, bin)

	deep := strings.Repeat(`{"a":[`, 300) + `"\u00e9"` + strings.Repeat(`]}`, 300)
	frames := []string{
		`{"v":2,"type":"noise_msg","data":"QUJD"}`,
		"\t\n {\"a\" :\t[1, 2 ,[3,[4,[]]],{}] ,\"b\":\"\\u00e9\\\"\\\\\\/\\b\\f\\n\\r\\t\"}\r\n ",
		"{\"emoji\":\"\U0001F600\",\"jp\":\"\u65e5\u672c\u8a9e\",\"nul\":\"\\u0000\",\"sur\":\"\\ud83d\\ude00\",\"del\":\"\x7f\"}",
		`[-0, 0.0, 1e10, -1.5E-3, 12345678901234567890123, 1E+2, 0e-0]`,
		`"just a string"`,
		`"\"conn_id\":\"c-0000000000000000\""`,
		`42`,
		`-3.25e7`,
		`[1,"two",[3]]`,
		`true`,
		`false`,
		`null`,
		`{}`,
		`[]`,
		"  7  ",
		`{"conn_id":"c-0000000000000000","frame":{},"close_code":4401}`,
		`{"a":1,"a":2}`,
		deep,
		strings.Repeat("[", 1000) + strings.Repeat("]", 1000),
	}
	for _, f := range frames {
		send(t, ph, f)
		rtExpect(t, bin, rtEnv(id, f))
	}

	// A large frame (fragmented by the client's 4 KiB write buffer).
	big := `{"data":"` + strings.Repeat("\u00e9\u65e5x\\n", 20000) + `"}`
	send(t, ph, big)
	rtExpect(t, bin, rtEnv(id, big))

	// The same frame as one unfragmented frame with a 64-bit length.
	ph2 := tr.rtPhoneWith(websocket.Dialer{WriteBufferSize: 300000}, "srv-exact")
	id2 := connIDOf(t, ph2, bin)
	send(t, ph2, big)
	rtExpect(t, bin, rtEnv(id2, big))

	// Tiny fragments (7 bytes) that split multi-byte UTF-8 sequences.
	ph3 := tr.rtPhoneWith(websocket.Dialer{WriteBufferSize: 7}, "srv-exact")
	id3 := connIDOf(t, ph3, bin)
	small := " {\"t\":\"" + strings.Repeat("\u00e9\U0001F600\u65e5", 40) + "\"} "
	send(t, ph3, small)
	rtExpect(t, bin, rtEnv(id3, small))
}

func TestRoutingBinaryToPhoneByteExact(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-exact")
	tr.waitBinaries(1)
	ph := tr.phone("srv-exact")
	id := connIDOf(t, ph, bin)
	escID := strings.Replace(id, "-", `\u002d`, 1)

	cases := []struct{ envelope, want string }{
		{rtEnv(id, `{"v":2,"type":"noise_resp","data":"x"}`), `{"v":2,"type":"noise_resp","data":"x"}`},
		{`{"conn_id":"` + id + `","frame":{ "a" : [ 1 ,2 ] ,` + "\n\t" + `"b":{} }}`, `{ "a" : [ 1 ,2 ] ,` + "\n\t" + `"b":{} }`},
		{"  {\t\"frame\"  :  \"str\\\"ing\"  ,\n \"conn_id\" : \"" + id + "\" , \"token\":\"legacy\", \"unknown\":{\"x\":[1,2]} }\r\n", `"str\"ing"`},
		{rtEnv(id, `-1.5e3`), `-1.5e3`},
		{rtEnv(id, `true`), `true`},
		{rtEnv(id, `0`), `0`},
		{rtEnv(id, `[[],{}]`), `[[],{}]`},
		{rtEnv(id, "\"\u65e5\u672c\U0001F600\\u00e9\\ud83d\\ude00\""), "\"\u65e5\u672c\U0001F600\\u00e9\\ud83d\\ude00\""},
		{rtEnv(id, `{"conn_id":"c-0000000000000000","frame":1}`), `{"conn_id":"c-0000000000000000","frame":1}`},
		{`{"conn_id":"` + id + `","frame":{"k":"v"},"close_code":null}`, `{"k":"v"}`},
		{`{"conn_id":"` + escID + `","frame":"escaped id"}`, `"escaped id"`},
		{`{"conn\u005fid":"` + id + `","fr\u0061me":"escaped keys"}`, `"escaped keys"`},
	}
	for _, c := range cases {
		send(t, bin, c.envelope)
		rtExpect(t, ph, c.want)
	}

	big := `{"data":"` + strings.Repeat("\u00e9\u65e5x\\n", 20000) + `" }`
	send(t, bin, rtEnv(id, big))
	rtExpect(t, ph, big)
	// The phone is still open and routed both ways.
	send(t, ph, `"after"`)
	rtExpect(t, bin, rtEnv(id, `"after"`))
}

func TestRoutingOrderPreserved(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-order")
	tr.waitBinaries(1)
	a := tr.phone("srv-order")
	b := tr.phone("srv-order")
	idA := connIDOf(t, a, bin)
	idB := connIDOf(t, b, bin)
	const n = 200

	// Phone -> binary: two phones interleaved; each phone's frames keep
	// their order.
	for i := range n {
		send(t, a, fmt.Sprintf(`{"seq":%d,"from":"a"}`, i))
		send(t, b, fmt.Sprintf(`{"seq":%d,"from":"b"}`, i))
	}
	nextA, nextB := 0, 0
	for range 2 * n {
		got := string(read(t, bin))
		switch {
		case nextA < n && got == rtEnv(idA, fmt.Sprintf(`{"seq":%d,"from":"a"}`, nextA)):
			nextA++
		case nextB < n && got == rtEnv(idB, fmt.Sprintf(`{"seq":%d,"from":"b"}`, nextB)):
			nextB++
		default:
			t.Fatalf("binary got %q, want a:%d or b:%d next", got, nextA, nextB)
		}
	}

	// Binary -> phones: interleaved envelopes; each phone gets its own in order.
	for i := range n {
		send(t, bin, rtEnv(idA, fmt.Sprintf(`[%d,"a"]`, i)))
		send(t, bin, rtEnv(idB, fmt.Sprintf(`[%d,"b"]`, i)))
	}
	for i := range n {
		rtExpect(t, a, fmt.Sprintf(`[%d,"a"]`, i))
	}
	for i := range n {
		rtExpect(t, b, fmt.Sprintf(`[%d,"b"]`, i))
	}
	expectNoMessage(t, a, 50*time.Millisecond)
	expectNoMessage(t, bin, 10*time.Millisecond)
}

// TestRoutingConcurrentByteExact runs three phones and the binary at once
// with frames of varied sizes and contents, so buffers are recycled while
// others are still queued: every byte must still arrive unchanged and in
// order per phone.
func TestRoutingConcurrentByteExact(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-conc")
	tr.waitBinaries(1)
	const phones, n = 3, 150
	ph := make([]*websocket.Conn, phones)
	ids := make([]string, phones)
	idx := map[string]int{}
	for i := range ph {
		ph[i] = tr.phone("srv-conc")
		ids[i] = connIDOf(t, ph[i], bin)
		idx[ids[i]] = i
	}
	frame := func(dir string, p, k int) string {
		pad := strings.Repeat(string(rune('a'+(p*7+k)%26))+"\u00e9日", (k*37+p*101)%3000)
		return fmt.Sprintf(`{"dir":%q,"p":%d,"k":%d,"pad":"%s"}`, dir, p, k, pad)
	}
	errs := make(chan error, 2*phones+1)
	var wg sync.WaitGroup
	// Phones write concurrently with each other and with the binary.
	for p := range phones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ph[p]
			for k := range n {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := c.WriteMessage(websocket.TextMessage, []byte(frame("up", p, k))); err != nil {
					errs <- fmt.Errorf("phone %d write %d: %v", p, k, err)
					return
				}
			}
		}()
	}
	// Phones read what the binary sends them.
	for p := range phones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ph[p]
			for k := range n {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				op, msg, err := c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("phone %d read %d: %v", p, k, err)
					return
				}
				if op != websocket.TextMessage || string(msg) != frame("down", p, k) {
					errs <- fmt.Errorf("phone %d msg %d: opcode %d %q", p, k, op, rtTrunc(string(msg)))
					return
				}
			}
		}()
	}
	// The binary writes interleaved envelopes.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := range n {
			for p := range phones {
				bin.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := bin.WriteMessage(websocket.TextMessage, []byte(rtEnv(ids[p], frame("down", p, k)))); err != nil {
					errs <- fmt.Errorf("binary write: %v", err)
					return
				}
			}
		}
	}()
	// The test goroutine reads the binary.
	next := make([]int, phones)
	re := regexp.MustCompile(`^\{"conn_id":"(c-[0-9a-f]{16})","frame":`)
	for range phones * n {
		msg := string(read(t, bin))
		m := re.FindStringSubmatch(msg)
		if m == nil {
			t.Fatalf("binary got %q", rtTrunc(msg))
		}
		p, ok := idx[m[1]]
		if !ok || next[p] >= n {
			t.Fatalf("binary got unexpected %q", rtTrunc(msg))
		}
		if want := rtEnv(m[1], frame("up", p, next[p])); msg != want {
			t.Fatalf("binary got %q\nwant %q", rtTrunc(msg), rtTrunc(want))
		}
		next[p]++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// rtMasked encodes one client frame (masked, as RFC 6455 requires).
func rtMasked(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n < 1<<16:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	key := [4]byte{0x9a, 0x3c, 0x51, 0xe7}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i&3])
	}
	return out
}

// rtReadFrame reads one server frame (unmasked) and returns its fin bit,
// opcode and payload.
func rtReadFrame(t *testing.T, br *bufio.Reader) (bool, byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("read frame header: %v", err)
	}
	if h[1]&0x80 != 0 {
		t.Fatal("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		io.ReadFull(br, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		io.ReadFull(br, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatalf("read frame payload: %v", err)
	}
	return h[0]&0x80 != 0, h[0] & 0x0f, p
}

// rtRawPhone opens /v1/client with a raw socket, writing after the request
// (in the same write) the bytes of extra, and returns once the 101 is read.
func rtRawPhone(t *testing.T, tr *testRelay, id string, extra []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	addr := strings.TrimPrefix(tr.hs.URL, "http://")
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET /v1/client HTTP/1.1\r\nhost: %s\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"+
		"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n", addr)
	for _, h := range rtPhoneHeaders(id) {
		fmt.Fprintf(&b, "%s: %s\r\n", h.name, h.value)
	}
	b.WriteString("\r\n")
	if _, err := nc.Write(append([]byte(b.String()), extra...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw phone handshake: %v %v", resp, err)
	}
	return nc, br
}

// TestRoutingRawFraming sends phone frames the way gorilla never does:
// pipelined in the same packet as the opening handshake, and fragmented
// with a ping between the fragments and a continuation splitting a UTF-8
// sequence. The binary must still get exactly the phone's bytes, and the
// ping is answered with a pong (not a data frame).
func TestRoutingRawFraming(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-raw")
	tr.waitBinaries(1)

	f1 := " {\"v\":2,\"type\":\"noise_init\",\"data\":\"\u00e9\"} "
	f2 := `[1, 2]`
	pipelined := append(rtMasked(true, 0x1, []byte(f1)), rtMasked(true, 0x1, []byte(f2))...)
	nc, br := rtRawPhone(t, tr, "srv-raw", pipelined)
	got := string(read(t, bin))
	m := regexp.MustCompile(`^\{"conn_id":"(c-[0-9a-f]{16})","frame":`).FindStringSubmatch(got)
	if m == nil || got != rtEnv(m[1], f1) {
		t.Fatalf("binary got %q", got)
	}
	id := m[1]
	rtExpect(t, bin, rtEnv(id, f2))

	// Fragmented: text(fin=0) | ping | continuation(fin=0) | continuation(fin=1),
	// with the split inside the 3-byte UTF-8 sequence of U+65E5.
	whole := []byte("{\"k\":\"a\u65e5b\"}")
	cut := strings.Index(string(whole), "\u65e5") + 1
	var w []byte
	w = append(w, rtMasked(false, 0x1, whole[:cut])...)
	w = append(w, rtMasked(true, 0x9, []byte("pp"))...)
	w = append(w, rtMasked(false, 0x0, whole[cut:cut+1])...)
	w = append(w, rtMasked(true, 0x0, whole[cut+1:])...)
	if _, err := nc.Write(w); err != nil {
		t.Fatal(err)
	}
	fin, op, payload := rtReadFrame(t, br)
	if !fin || op != 0xA || string(payload) != "pp" {
		t.Fatalf("phone got frame fin=%v op=%#x %q, want pong \"pp\"", fin, op, payload)
	}
	rtExpect(t, bin, rtEnv(id, string(whole)))

	// And back down: one unfragmented text frame holding exactly the bytes.
	send(t, bin, rtEnv(id, `{"back" : "\u00e9"}`))
	fin, op, payload = rtReadFrame(t, br)
	if !fin || op != 0x1 || string(payload) != `{"back" : "\u00e9"}` {
		t.Fatalf("phone got frame fin=%v op=%#x %q", fin, op, payload)
	}
}

// ---- §5 phone frame security -----------------------------------------------

func TestRoutingPhoneInvalidJSONClosed(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-sec")
	tr.waitBinaries(1)
	sib := tr.phone("srv-sec")
	sibID := connIDOf(t, sib, bin)

	bad := []string{
		`{"a":1},"conn_id":"c-0000000000000000"`,
		`1 2`,
		`{"a":1}}`,
		`{"a":1},{"b":2}`,
		"{\"a\":\"\xff\"}",
		"{\"a\":\"\xed\xa0\x80\"}", // UTF-8-encoded surrogate
		"{\"a\":\"\xc3\"}",         // truncated sequence
		"\"\xe6\x97\"",             // truncated sequence before the quote
		"{\"\xff\":1}",             // invalid UTF-8 in a key
		"",
		"   ",
		`{"a":1,}`,
		`[1,]`,
		`{'a':1}`,
		`NaN`,
		`01`,
		`"unterminated`,
		`{"a":1`,
		`tru`,
		"\"a\x01b\"",
		`"\x"`,
		`"\u12"`,
		`+1`,
		`.5`,
		`1.`,
		`{"a" 1}`,
		`[1 2]`,
		"\x00",
		"\"\xc0\xaf\"",         // overlong encoding of '/'
		"\"\xf4\x90\x80\x80\"", // above U+10FFFF
		"\"\x80\"",             // lone continuation byte
		`-`,
		`-01`,
		`1e+`,
		`[1]x`,
		`}`,
	}
	for _, f := range bad {
		ph := tr.phone("srv-sec")
		id := connIDOf(t, ph, bin)
		send(t, ph, f)
		rtExpectOnlyClose(t, ph, 1007, "frame is not valid JSON")
		// The binary's next message is the notice: the bad bytes never reach it.
		if got := string(read(t, bin)); got != rtNotice(id, 1007) {
			t.Fatalf("frame %q: binary got %q, want the 1007 notice", f, got)
		}
		// The sibling is unaffected both ways.
		send(t, sib, `{"still":"here"}`)
		rtExpect(t, bin, rtEnv(sibID, `{"still":"here"}`))
		send(t, bin, rtEnv(sibID, `"pong"`))
		rtExpect(t, sib, `"pong"`)
	}

	// A binary-opcode message: 1003, and a 1003 notice.
	ph := tr.phone("srv-sec")
	id := connIDOf(t, ph, bin)
	rtSendBinaryOp(t, ph, `{"v":2,"type":"noise_msg","data":"x"}`)
	rtExpectOnlyClose(t, ph, 1003, "binary messages are not accepted")
	rtExpect(t, bin, rtNotice(id, 1003))
	send(t, sib, `"sibling"`)
	rtExpect(t, bin, rtEnv(sibID, `"sibling"`))
	send(t, bin, rtEnv(sibID, `"ok"`))
	rtExpect(t, sib, `"ok"`)
	if _, p := tr.srv.Counts(); p != 1 {
		t.Fatalf("phones = %d, want only the sibling", p)
	}
}

// ---- §5 close directives ---------------------------------------------------

func TestRoutingCloseDirectives(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-cd")
	tr.waitBinaries(1)
	witness := tr.phone("srv-cd")
	witnessID := connIDOf(t, witness, bin)
	// conns: binary + witness
	const base = 2

	// proveNoNotice waits until the closed phone's goroutine has finished
	// (after any notice would have been queued) and then checks that the
	// binary's next message is the witness's frame.
	proveNoNotice := func(t *testing.T, tag string) {
		t.Helper()
		tr.rtWaitConns(base)
		send(t, witness, fmt.Sprintf(`{"witness":%q}`, tag))
		if got := string(read(t, bin)); got != rtEnv(witnessID, fmt.Sprintf(`{"witness":%q}`, tag)) {
			t.Fatalf("%s: binary got %q, want the witness frame (no close notice after a directive)", tag, got)
		}
	}

	t.Run("frame then 4401", func(t *testing.T) {
		ph := tr.phone("srv-cd")
		id := connIDOf(t, ph, bin)
		f := `{"v":2,"type":"noise_msg", "data":"bye" }`
		send(t, bin, `{"conn_id":"`+id+`","frame":`+f+`,"close_code":4401}`)
		rtExpect(t, ph, f)
		rtExpectOnlyClose(t, ph, 4401, "")
		proveNoNotice(t, "4401")
	})
	t.Run("null frame 4421", func(t *testing.T) {
		ph := tr.phone("srv-cd")
		id := connIDOf(t, ph, bin)
		send(t, bin, `{"conn_id":"`+id+`","frame":null,"close_code":4421}`)
		rtExpectOnlyClose(t, ph, 4421, "")
		proveNoNotice(t, "null")
	})
	t.Run("absent frame 4421", func(t *testing.T) {
		ph := tr.phone("srv-cd")
		id := connIDOf(t, ph, bin)
		send(t, bin, `{"close_code":4421,"conn_id":"`+id+`"}`)
		rtExpectOnlyClose(t, ph, 4421, "")
		proveNoNotice(t, "absent")
	})
	t.Run("queued frames first", func(t *testing.T) {
		ph := tr.phone("srv-cd")
		id := connIDOf(t, ph, bin)
		for i := range 20 {
			send(t, bin, rtEnv(id, fmt.Sprintf(`{"n":%d}`, i)))
		}
		send(t, bin, `{"conn_id":"`+id+`","frame":{"n":"last"},"close_code":4000}`)
		// Anything sent for the conn after the directive is not delivered.
		send(t, bin, rtEnv(id, `{"n":"after"}`))
		send(t, bin, `{"conn_id":"`+id+`","close_code":4001}`)
		for i := range 20 {
			rtExpect(t, ph, fmt.Sprintf(`{"n":%d}`, i))
		}
		rtExpect(t, ph, `{"n":"last"}`)
		rtExpectOnlyClose(t, ph, 4000, "")
		proveNoNotice(t, "queued")
	})
	t.Run("allowed codes kept", func(t *testing.T) {
		for _, code := range []int{1000, 1008, 3000, 4999} {
			before := rtSnap(tr.srv.Stats())
			ph := tr.phone("srv-cd")
			id := connIDOf(t, ph, bin)
			send(t, bin, fmt.Sprintf(`{"conn_id":"%s","close_code":%d}`, id, code))
			rtExpectOnlyClose(t, ph, code, "")
			proveNoNotice(t, fmt.Sprint(code))
			if after := rtSnap(tr.srv.Stats()); after != before {
				t.Fatalf("code %d: stats moved %+v -> %+v", code, before, after)
			}
		}
	})
	t.Run("forbidden codes replaced", func(t *testing.T) {
		for _, code := range []string{"1005", "999", "5000", "1016", "1004", "1006", "1015", "2999", "0", "-1", "65536"} {
			before := tr.srv.Stats().CloseCodeReplaced.Load()
			ph := tr.phone("srv-cd")
			id := connIDOf(t, ph, bin)
			send(t, bin, `{"conn_id":"`+id+`","frame":"last words","close_code":`+code+`}`)
			rtExpect(t, ph, `"last words"`)
			rtExpectOnlyClose(t, ph, 1011, "")
			proveNoNotice(t, code)
			if got := tr.srv.Stats().CloseCodeReplaced.Load(); got != before+1 {
				t.Fatalf("code %s: CloseCodeReplaced %d -> %d, want +1", code, before, got)
			}
		}
	})
	t.Run("push_wake with conn_id ignored", func(t *testing.T) {
		ph := tr.phone("srv-cd")
		id := connIDOf(t, ph, bin)
		before := rtSnap(tr.srv.Stats())
		send(t, bin, `{"push_wake":{"platform":"fcm","token":"t"},"conn_id":"`+id+`","frame":{"p":1}}`)
		rtExpect(t, ph, `{"p":1}`)
		send(t, bin, `{"conn_id":"`+id+`","push_wake":{"platform":"fcm","token":"t"},"close_code":4001}`)
		rtExpectOnlyClose(t, ph, 4001, "")
		proveNoNotice(t, "push")
		if after := rtSnap(tr.srv.Stats()); after != before {
			t.Fatalf("stats moved %+v -> %+v (push_wake must be ignored)", before, after)
		}
	})
}

// ---- §5 close notices ------------------------------------------------------

func TestRoutingCloseNotices(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-cn")
	tr.waitBinaries(1)

	for _, c := range []struct {
		name   string
		code   int
		reason string
	}{
		{"4000", 4000, "bye"},
		{"1000", 1000, ""},
		{"3001", 3001, "x"},
		{"1001", 1001, "going"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ph := tr.phone("srv-cn")
			id := connIDOf(t, ph, bin)
			for i := range 3 {
				send(t, ph, fmt.Sprintf(`{"last":%d}`, i))
			}
			rtCloseWith(t, ph, c.code, c.reason)
			for i := range 3 {
				rtExpect(t, bin, rtEnv(id, fmt.Sprintf(`{"last":%d}`, i)))
			}
			rtExpect(t, bin, rtNotice(id, c.code))
			// The relay answered the close with the same code (RFC 6455 echo).
			rtExpectOnlyClose(t, ph, c.code, "")
		})
	}

	t.Run("close frame without code", func(t *testing.T) {
		ph := tr.phone("srv-cn")
		id := connIDOf(t, ph, bin)
		send(t, ph, `"before empty close"`)
		err := ph.WriteControl(websocket.CloseMessage, nil, time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		rtExpect(t, bin, rtEnv(id, `"before empty close"`))
		rtExpect(t, bin, rtNotice(id, 1001))
	})

	t.Run("relay closes phone for a bad close code", func(t *testing.T) {
		// 1005 may not appear on the wire: the relay closes the phone for
		// its own reason and the notice carries the code the relay used.
		ph := tr.phone("srv-cn")
		id := connIDOf(t, ph, bin)
		send(t, ph, `"before bad close"`)
		err := ph.WriteControl(websocket.CloseMessage, []byte{0x03, 0xED}, time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		rtExpect(t, bin, rtEnv(id, `"before bad close"`))
		ph.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, rerr := ph.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(rerr, &ce) || ce.Code != 1002 {
			t.Fatalf("phone: %v, want close 1002", rerr)
		}
		rtExpect(t, bin, rtNotice(id, ce.Code))
	})

	t.Run("dropped TCP", func(t *testing.T) {
		ph := tr.phone("srv-cn")
		id := connIDOf(t, ph, bin)
		for i := range 3 {
			send(t, ph, fmt.Sprintf(`{"drop":%d}`, i))
		}
		ph.NetConn().Close()
		for i := range 3 {
			rtExpect(t, bin, rtEnv(id, fmt.Sprintf(`{"drop":%d}`, i)))
		}
		rtExpect(t, bin, rtNotice(id, 1001))
	})

	t.Run("only one notice", func(t *testing.T) {
		ph := tr.phone("srv-cn")
		id := connIDOf(t, ph, bin)
		rtCloseWith(t, ph, 4000, "")
		rtExpect(t, bin, rtNotice(id, 4000))
		tr.rtWaitConns(1)
		// The binary is still open for new phones, and the next thing it
		// gets is the new phone's frame (no second notice). (gorilla's read
		// errors are sticky, so silence is proved with a witness frame.)
		ph2 := tr.phone("srv-cn")
		send(t, ph2, `"next"`)
		m := regexp.MustCompile(`^\{"conn_id":"(c-[0-9a-f]{16})","frame":"next"\}$`).FindStringSubmatch(string(read(t, bin)))
		if m == nil || m[1] == id {
			t.Fatalf("binary's next message is not the new phone's frame: %v", m)
		}
	})
}

// ---- §5 malformed binary envelopes -----------------------------------------

func TestRoutingMalformedEnvelopesDropped(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-mal")
	foreignBin := tr.binary("srv-mal-other")
	tr.waitBinaries(2)
	ph := tr.phone("srv-mal")
	id := connIDOf(t, ph, bin)
	foreign := tr.phone("srv-mal-other")
	foreignID := connIDOf(t, foreign, foreignBin)
	// A conn_id whose phone has left is unknown from then on.
	gone := tr.phone("srv-mal")
	goneID := connIDOf(t, gone, bin)
	rtCloseWith(t, gone, 1000, "")
	rtExpect(t, bin, rtNotice(goneID, 1000))

	type delta struct{ malformed, unknown, binop int64 }
	cases := []struct {
		name   string
		msg    string
		binOp  bool
		expect delta
	}{
		{"not JSON", `not json`, false, delta{1, 0, 0}},
		{"truncated", `{"conn_id":"` + id + `","frame":{}`, false, delta{1, 0, 0}},
		{"trailing garbage", rtEnv(id, `{"x":1}`) + ` x`, false, delta{1, 0, 0}},
		{"two envelopes", rtEnv(id, `{"x":1}`) + rtEnv(id, `{"x":2}`), false, delta{1, 0, 0}},
		{"invalid UTF-8", "{\"conn_id\":\"" + id + "\",\"frame\":\"\xff\"}", false, delta{1, 0, 0}},
		{"empty message", ``, false, delta{1, 0, 0}},
		{"array", `[{"conn_id":"` + id + `","frame":1}]`, false, delta{1, 0, 0}},
		{"string", `"` + id + `"`, false, delta{1, 0, 0}},
		{"number", `4401`, false, delta{1, 0, 0}},
		{"null", `null`, false, delta{1, 0, 0}},
		{"empty object", `{}`, false, delta{1, 0, 0}},
		{"frame only", `{"frame":{}}`, false, delta{1, 0, 0}},
		{"empty conn_id", `{"conn_id":"","frame":{}}`, false, delta{1, 0, 0}},
		{"null conn_id", `{"conn_id":null,"frame":{}}`, false, delta{1, 0, 0}},
		{"conn_id only", `{"conn_id":"` + id + `"}`, false, delta{1, 0, 0}},
		{"null frame no close", `{"conn_id":"` + id + `","frame":null}`, false, delta{1, 0, 0}},
		{"null frame null close", `{"conn_id":"` + id + `","frame":null,"close_code":null}`, false, delta{1, 0, 0}},
		{"conn_id number", `{"conn_id":123,"frame":{}}`, false, delta{1, 0, 0}},
		{"conn_id array", `{"conn_id":["` + id + `"],"frame":{}}`, false, delta{1, 0, 0}},
		{"conn_id object", `{"conn_id":{"id":"` + id + `"},"frame":{}}`, false, delta{1, 0, 0}},
		{"close_code string", `{"conn_id":"` + id + `","frame":{},"close_code":"4401"}`, false, delta{1, 0, 0}},
		{"unknown conn_id", rtEnv("c-0000000000000000", `{"x":1}`), false, delta{0, 1, 0}},
		{"unknown conn_id close", `{"conn_id":"c-ffffffffffffffff","close_code":4401}`, false, delta{0, 1, 0}},
		{"id with extra char", rtEnv(id+"0", `{"x":1}`), false, delta{0, 1, 0}},
		{"uppercase id", rtEnv(strings.ToUpper(id), `{"x":1}`), false, delta{0, 1, 0}},
		{"foreign conn_id", rtEnv(foreignID, `{"x":"foreign"}`), false, delta{0, 1, 0}},
		{"foreign close", `{"conn_id":"` + foreignID + `","close_code":4401}`, false, delta{0, 1, 0}},
		{"gone conn_id", rtEnv(goneID, `{"x":"gone"}`), false, delta{0, 1, 0}},
		{"binary opcode", rtEnv(id, `{"x":"binop"}`), true, delta{0, 0, 1}},
	}
	for i, c := range cases {
		before := rtSnap(tr.srv.Stats())
		if c.binOp {
			rtSendBinaryOp(t, bin, c.msg)
		} else {
			send(t, bin, c.msg)
		}
		follow := fmt.Sprintf(`{"follow":%d}`, i)
		send(t, bin, rtEnv(id, follow))
		// The phone's next message is the follow-up: nothing of the bad
		// envelope was delivered, and the binary is still being read.
		if got := string(read(t, ph)); got != follow {
			t.Fatalf("%s: phone got %q, want %q", c.name, got, follow)
		}
		after := rtSnap(tr.srv.Stats())
		got := delta{after.Malformed - before.Malformed, after.Unknown - before.Unknown, after.BinaryOp - before.BinaryOp}
		if got != c.expect {
			t.Errorf("%s: counter deltas (malformed, unknown, binop) = %+v, want %+v", c.name, got, c.expect)
		}
		if after.Replaced != before.Replaced || after.PushReq != before.PushReq || after.PushMal != before.PushMal {
			t.Errorf("%s: unrelated counters moved %+v -> %+v", c.name, before, after)
		}
	}
	// The foreign phone received nothing: its next message is its own
	// binary's frame.
	send(t, foreignBin, rtEnv(foreignID, `"mine"`))
	rtExpect(t, foreign, `"mine"`)
	// The binary is open in the other direction too, and got no replies.
	send(t, ph, `"still routed"`)
	rtExpect(t, bin, rtEnv(id, `"still routed"`))
	expectNoMessage(t, bin, 20*time.Millisecond)
	if b, p := tr.srv.Counts(); b != 2 || p != 2 {
		t.Fatalf("counts %d/%d, want 2/2", b, p)
	}
}

// ---- §5/§8 push wake -------------------------------------------------------

type rtWakeCall struct{ serverID, platform, token string }

// rtFakePush records Wake calls.
type rtFakePush struct {
	mu    sync.Mutex
	calls []rtWakeCall
}

func (f *rtFakePush) Wake(serverID, platform, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, rtWakeCall{serverID, platform, token})
}

func (f *rtFakePush) snapshot() []rtWakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]rtWakeCall(nil), f.calls...)
}

// rtPushRig is a relay with a binary and one phone used to sync on the
// binary's read loop: an envelope delivered to the phone proves everything
// the binary sent before it has been handled.
type rtPushRig struct {
	tr  *testRelay
	bin *websocket.Conn
	ph  *websocket.Conn
	id  string
	n   int
}

func rtNewPushRig(t *testing.T, opts ...Option) *rtPushRig {
	tr := startRelay(t, Config{}, opts...)
	bin := tr.binary("srv-push")
	tr.waitBinaries(1)
	ph := tr.phone("srv-push")
	return &rtPushRig{tr: tr, bin: bin, ph: ph, id: connIDOf(t, ph, bin)}
}

// do sends msg from the binary and waits until the relay has handled it.
func (r *rtPushRig) do(t *testing.T, msg string) {
	t.Helper()
	send(t, r.bin, msg)
	r.n++
	follow := fmt.Sprintf(`{"sync":%d}`, r.n)
	send(t, r.bin, rtEnv(r.id, follow))
	rtExpect(t, r.ph, follow)
}

func TestRoutingPushWakeDefaultDropped(t *testing.T) {
	r := rtNewPushRig(t)
	before := rtSnap(r.tr.srv.Stats())
	r.do(t, `{"push_wake":{"platform":"fcm","token":"t"}}`)
	after := rtSnap(r.tr.srv.Stats())
	if after.PushReq != before.PushReq+1 || after.PushDrop != before.PushDrop+1 || after.PushMal != before.PushMal {
		t.Fatalf("stats %+v -> %+v, want PushRequested+1 PushDropped+1", before, after)
	}
	// No reply to the binary (its next message is the phone's frame), and it
	// stays open both ways.
	send(t, r.ph, `"up"`)
	rtExpect(t, r.bin, rtEnv(r.id, `"up"`))
}

func TestRoutingPushWakeSink(t *testing.T) {
	sink := &rtFakePush{}
	r := rtNewPushRig(t, WithPush(sink))
	s := r.tr.srv.Stats()

	r.do(t, `{"push_wake":{"platform":"fcm","token":"tok-1"}}`)
	r.do(t, ` { "push_wake" : { "token" : "tok-2" , "platform" : "apns", "extra": [1] }, "unknown": 1 } `)
	r.do(t, `{"conn_id":null,"push_wake":{"platform":"fcm","token":"a\/b\u00e9"}}`)
	want := []rtWakeCall{
		{"srv-push", "fcm", "tok-1"},
		{"srv-push", "apns", "tok-2"},
		{"srv-push", "fcm", "a/b\u00e9"},
	}
	if got := sink.snapshot(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Wake calls %q, want %q", got, want)
	}
	if s.PushRequested.Load() != 3 || s.PushDropped.Load() != 0 || s.PushMalformed.Load() != 0 {
		t.Fatalf("requested %d dropped %d malformed %d, want 3/0/0",
			s.PushRequested.Load(), s.PushDropped.Load(), s.PushMalformed.Load())
	}

	// Malformed object-shaped requests: never reach the sink, PushMalformed.
	objectShaped := []string{
		`{"push_wake":{"platform":"gcm","token":"t"}}`,
		`{"push_wake":{"platform":"FCM","token":"t"}}`,
		`{"push_wake":{"platform":"fcm ","token":"t"}}`,
		`{"push_wake":{"platform":"fcm","token":""}}`,
		`{"push_wake":{"platform":"fcm","token":123}}`,
		`{"push_wake":{"platform":"fcm","token":null}}`,
		`{"push_wake":{"platform":"fcm","token":["t"]}}`,
		`{"push_wake":{"token":"t"}}`,
		`{"push_wake":{"platform":"fcm"}}`,
		`{"push_wake":{"platform":1,"token":"t"}}`,
		`{"push_wake":{}}`,
	}
	for _, m := range objectShaped {
		before := rtSnap(s)
		r.do(t, m)
		after := rtSnap(s)
		if after.PushMal != before.PushMal+1 || after.PushReq != before.PushReq {
			t.Errorf("%s: stats %+v -> %+v, want PushMalformed+1 only", m, before, after)
		}
	}
	// Not an object at all: not a wake, so a malformed envelope.
	notObject := []string{
		`{"push_wake":"fcm:t"}`,
		`{"push_wake":["fcm","t"]}`,
		`{"push_wake":null}`,
		`{"push_wake":true}`,
	}
	for _, m := range notObject {
		before := rtSnap(s)
		r.do(t, m)
		after := rtSnap(s)
		if after.Malformed != before.Malformed+1 || after.PushReq != before.PushReq {
			t.Errorf("%s: stats %+v -> %+v, want DroppedMalformed+1", m, before, after)
		}
	}
	if got := sink.snapshot(); len(got) != 3 {
		t.Fatalf("sink got %d calls, want still 3: %q", len(got), got)
	}
	// The binary never got a reply: its next message is the phone's frame.
	send(t, r.ph, `"up"`)
	rtExpect(t, r.bin, rtEnv(r.id, `"up"`))
}

// ---- §9 /healthz -----------------------------------------------------------

func TestRoutingHealthz(t *testing.T) {
	tr := startRelay(t, Config{Version: "9.8.7-test"})
	get := func() map[string]json.RawMessage {
		t.Helper()
		resp, err := tr.hs.Client().Get(tr.hs.URL + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz: %v", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Fatalf("Cache-Control %q, want no-store", cc)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		keys := []string{"status", "version", "connected_binaries", "connected_phones", "uptime_seconds"}
		if len(m) != len(keys) {
			t.Fatalf("body %s: want exactly keys %v", body, keys)
		}
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				t.Fatalf("body %s: missing %q", body, k)
			}
		}
		if string(m["status"]) != `"ok"` || string(m["version"]) != `"9.8.7-test"` {
			t.Fatalf("body %s", body)
		}
		var up float64
		if err := json.Unmarshal(m["uptime_seconds"], &up); err != nil || up < 0 || up != float64(int64(up)) {
			t.Fatalf("uptime_seconds %s", m["uptime_seconds"])
		}
		return m
	}
	m := get()
	if string(m["connected_binaries"]) != "0" || string(m["connected_phones"]) != "0" {
		t.Fatalf("idle counts %s/%s", m["connected_binaries"], m["connected_phones"])
	}
	tr.binary("srv-health")
	tr.waitBinaries(1)
	tr.phone("srv-health")
	tr.phone("srv-health")
	m = get()
	if string(m["connected_binaries"]) != "1" || string(m["connected_phones"]) != "2" {
		t.Fatalf("counts %s/%s, want 1/2", m["connected_binaries"], m["connected_phones"])
	}
}

// A binary's one read can carry a megabyte of small frames for one phone
// (each charged its whole pooled buffer against the phone's queue): a
// phone that reads everything gets all of them, in order, and is not
// closed for a full backlog while the loop is still routing that read.
func TestBinaryBurstOfSmallFramesReachesPhone(t *testing.T) {
	tr := startRelay(t, Config{})
	addr := strings.TrimPrefix(tr.url, "ws://")
	bin, err := dialRaw(addr, "/v1/server", binaryHeaders("burst"))
	if err != nil {
		t.Fatal(err)
	}
	defer bin.close()
	eventually(t, func() bool { b, _ := tr.srv.Counts(); return b == 1 })
	ph := tr.phone("burst")
	if err := ph.WriteMessage(websocket.TextMessage, []byte(`{"hi":1}`)); err != nil {
		t.Fatal(err)
	}
	_, env, err := bin.read()
	if err != nil {
		t.Fatal(err)
	}
	cid := strings.TrimPrefix(string(env), `{"conn_id":"`)
	cid = cid[:strings.IndexByte(cid, '"')]
	const n = 19200 // about 900 KiB on the wire
	var burst []byte
	for i := range n {
		p := fmt.Appendf(nil, `{"conn_id":"%s","frame":%d}`, cid, i)
		burst = append(burst, 0x81, 0x80|byte(len(p)), 0, 0, 0, 0) // masked with a zero key
		burst = append(burst, p...)
	}
	go func() { _, _ = bin.nc.Write(burst) }()
	ph.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range n {
		_, m, err := ph.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d of %d: %v", i, n, err)
		}
		if want := strconv.Itoa(i); string(m) != want {
			t.Fatalf("frame %d: got %q", i, m)
		}
	}
}
