package core

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// fake is a Peer that records what was written to it.
type fake struct {
	out    bytes.Buffer
	closed bool
}

func (f *fake) Write(_ *Conn, b []byte) { f.out.Write(b) }
func (f *fake) Close()                  { f.closed = true }

func newConn() (*Conn, *fake) {
	f := &fake{}
	return &Conn{Peer: f}, f
}

func upgrade(path string, headers ...string) []byte {
	return []byte("GET " + path + " HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		strings.Join(headers, "\r\n") + "\r\n\r\n")
}

// clientFrame is a masked text frame.
func clientFrame(op byte, payload string, key uint32) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	default:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	}
	b = binary.LittleEndian.AppendUint32(b, key)
	p := []byte(payload)
	unmask(p, key)
	return append(b, p...)
}

// serverFrames splits unmasked frames after a 101 response.
func serverFrames(t *testing.T, b []byte) []string {
	t.Helper()
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 && bytes.HasPrefix(b, []byte("HTTP/")) {
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 101")) || !bytes.Contains(b[:i], []byte("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) {
			t.Fatalf("bad upgrade response %q", b[:i])
		}
		b = b[i+4:]
	}
	var out []string
	for len(b) > 0 {
		n, h := int(b[1]&0x7f), 2
		if n == 126 {
			n, h = int(binary.BigEndian.Uint16(b[2:])), 4
		}
		out = append(out, string([]byte{b[0] & 0x0f})+string(b[h:h+n]))
		b = b[h+n:]
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	r := New()
	bin, bf := newConn()
	r.OnData(bin, upgrade("/v1/server", "X-Pyrycode-Server: s1"))
	ph, pf := newConn()
	// The phone's upgrade and first frame arrive split over three reads.
	msg := append(upgrade("/v1/client", "x-pyrycode-server: s1", "X-Pyrycode-Token: t"), clientFrame(opText, `{"n":1}`, 0x11223344)...)
	r.OnData(ph, msg[:10])
	r.OnData(ph, msg[10:len(msg)-3])
	r.OnData(ph, msg[len(msg)-3:])
	got := serverFrames(t, bf.out.Bytes())
	want := "\x01" + `{"conn_id":"` + string(ph.connID) + `","frame":{"n":1}}`
	if len(got) != 1 || got[0] != want {
		t.Fatalf("binary got %q, want %q", got, want)
	}
	env := `{"conn_id":"` + string(ph.connID) + `","frame":{"v":2,"data":"` + strings.Repeat("x", 300) + `"}}`
	r.OnData(bin, append(clientFrame(opText, env, 0), clientFrame(opPing, "p", 7)...))
	pgot := serverFrames(t, pf.out.Bytes())
	if len(pgot) != 1 || pgot[0] != "\x01"+`{"v":2,"data":"`+strings.Repeat("x", 300)+`"}` {
		t.Fatalf("phone got %q", pgot)
	}
	if got := serverFrames(t, bf.out.Bytes()); got[len(got)-1] != "\x0ap" {
		t.Fatalf("no pong: %q", got)
	}
	// The phone closes: answered, closed, and its binary gets the notice.
	r.OnData(ph, clientFrame(opClose, "\x03\xe8", 5))
	if !pf.closed || !strings.HasSuffix(pf.out.String(), "\x88\x02\x03\xe8") {
		t.Fatalf("close not answered: %q %v", pf.out.String(), pf.closed)
	}
	r.OnClose(ph)
	got = serverFrames(t, bf.out.Bytes())
	if got[len(got)-1] != "\x01"+`{"conn_id":"`+string(ph.connID)+`","close_code":1000}` {
		t.Fatalf("no close notice: %q", got[len(got)-1])
	}
}

func TestRefusals(t *testing.T) {
	r := New()
	ph, pf := newConn()
	r.OnData(ph, upgrade("/v1/client", "X-Pyrycode-Server: none", "X-Pyrycode-Token: t"))
	if got := serverFrames(t, pf.out.Bytes()); len(got) != 1 || !strings.HasPrefix(got[0], "\x08\x11\x34") || !pf.closed {
		t.Fatalf("want 4404, got %q", got)
	}
	a, _ := newConn()
	r.OnData(a, upgrade("/v1/server", "X-Pyrycode-Server: s"))
	b, bf := newConn()
	r.OnData(b, upgrade("/v1/server", "X-Pyrycode-Server: s"))
	if got := serverFrames(t, bf.out.Bytes()); len(got) != 1 || !strings.HasPrefix(got[0], "\x08\x11\x39") {
		t.Fatalf("want 4409, got %q", got)
	}
	c, cf := newConn()
	r.OnData(c, upgrade("/v1/client", "X-Pyrycode-Server: s"))
	if !strings.HasPrefix(cf.out.String(), "HTTP/1.1 400") || !cf.closed {
		t.Fatalf("want 400, got %q", cf.out.String())
	}
}
