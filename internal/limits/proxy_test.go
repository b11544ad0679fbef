package limits

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

// v1 is a PROXY v1 header, written by hand.
func v1(src string) []byte {
	return []byte("PROXY TCP4 " + src + " 127.0.0.1 40000 443\r\n")
}

// v2 is a PROXY v2 header for src, written by go-proxyproto.
func v2(t testing.TB, src string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(2,
		&net.TCPAddr{IP: net.ParseIP(src), Port: 40000},
		&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 443})
	var b bytes.Buffer
	if _, err := h.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestProxyProtocolFromTrustedPeer(t *testing.T) {
	e := startEnv(t, Config{MaxConnsPerIP: 1, TrustedProxies: mustPrefixes(t, "127.0.0.30"), ProxyProtocol: true})
	const proxy = "127.0.0.30"
	c1 := netip.MustParseAddr("192.0.2.1")

	// v1: the header's source is the client, and it holds the slot.
	first := send(t, dialFrom(t, proxy, e.addr), v1("192.0.2.1"), binaryReq())
	wantStatus(t, first, http.StatusSwitchingProtocols)
	e.waitBinaries(t, 1)
	if n := e.lim.ConnsFrom(c1); n != 1 {
		t.Fatalf("PROXY source holds %d slots, want 1", n)
	}
	if n := e.lim.ConnsFrom(netip.MustParseAddr(proxy)); n != 0 {
		t.Fatalf("proxy holds %d per-IP slots", n)
	}
	// The relay logs binary_connected just after counting the binary.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(e.logs.String(), `"remote":"192.0.2.1"`); {
		if time.Now().After(deadline) {
			t.Fatalf("relay log does not show the PROXY source:\n%s", e.logs.String())
		}
		time.Sleep(2 * time.Millisecond)
	}

	// v2 with the same source: over its cap of one.
	ex := send(t, dialFrom(t, proxy, e.addr), v2(t, "192.0.2.1"), binaryReq())
	wantStatus(t, ex, http.StatusTooManyRequests)
	wantClosed(t, ex)
	if n := upgrades(e, relay.EndpointServer, relay.OutcomeIPConnCap); n != 1 {
		t.Fatalf("server ip_connection_cap = %d, want 1", n)
	}
	// v2 with another source: fine.
	wantStatus(t, send(t, dialFrom(t, proxy, e.addr), v2(t, "192.0.2.2"), binaryReq()), http.StatusSwitchingProtocols)

	// A connection that has sent only its PROXY header already counts
	// against the source in it.
	hold := dialFrom(t, proxy, e.addr)
	if _, err := hold.Write(v2(t, "192.0.2.3")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "header-phase connection counted", func() bool { return e.lim.ConnsFrom(netip.MustParseAddr("192.0.2.3")) == 1 })
	wantStatus(t, send(t, dialFrom(t, proxy, e.addr), v1("192.0.2.3"), phoneReq()), http.StatusTooManyRequests)
	if n := upgrades(e, relay.EndpointClient, relay.OutcomeIPConnCap); n != 1 {
		t.Fatalf("client ip_connection_cap = %d, want 1", n)
	}

	// Closing the first upgraded connection frees 192.0.2.1.
	first.nc.Close()
	eventually(t, "slot freed", func() bool { return e.lim.ConnsFrom(c1) == 0 })
	wantStatus(t, send(t, dialFrom(t, proxy, e.addr), v1("192.0.2.1"), binaryReq()), http.StatusSwitchingProtocols)

	// LOCAL (the proxy's own health check) keeps the proxy as the peer.
	local := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC})
	var lb bytes.Buffer
	if _, err := local.WriteTo(&lb); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, send(t, dialFrom(t, proxy, e.addr), lb.Bytes(), getReq("/healthz")), http.StatusOK)
	if n := e.lim.ProxyRefused(); n != 0 {
		t.Fatalf("ProxyRefused = %d, want 0", n)
	}
}

func TestProxyProtocolRateUsesSource(t *testing.T) {
	e := startEnv(t, Config{UpgradeBurst: 1, TrustedProxies: mustPrefixes(t, "127.0.0.31"), ProxyProtocol: true})
	const proxy = "127.0.0.31"
	wantStatus(t, send(t, dialFrom(t, proxy, e.addr), v1("192.0.2.10"), phoneReq()), http.StatusSwitchingProtocols)
	wantStatus(t, send(t, dialFrom(t, proxy, e.addr), v2(t, "192.0.2.10"), phoneReq()), http.StatusTooManyRequests)
	wantStatus(t, send(t, dialFrom(t, proxy, e.addr), v2(t, "192.0.2.11"), phoneReq()), http.StatusSwitchingProtocols)
	if n := upgrades(e, relay.EndpointClient, relay.OutcomeRateLimited); n != 1 {
		t.Fatalf("client rate_limited = %d, want 1", n)
	}
}

// refused checks that the server refuses the connection: it answers 400
// (net/http's reply to a failed request read) or just closes, and never
// upgrades.
func refused(t *testing.T, nc net.Conn, pre []byte, req string) {
	t.Helper()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(append(append([]byte(nil), pre...), req...)); err != nil {
		return // already closed
	}
	got, _ := io.ReadAll(nc)
	if len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) {
		t.Fatalf("refused connection answered %q", got)
	}
}

func TestProxyProtocolRefusals(t *testing.T) {
	e := startEnv(t, Config{TrustedProxies: mustPrefixes(t, "127.0.0.32"), ProxyProtocol: true})
	const proxy, other = "127.0.0.32", "127.0.0.33"

	// An untrusted peer may not send a PROXY header, v1 or v2.
	refused(t, dialFrom(t, other, e.addr), v1("192.0.2.1"), binaryReq())
	refused(t, dialFrom(t, other, e.addr), v2(t, "192.0.2.1"), binaryReq())
	// Nor a broken one.
	refused(t, dialFrom(t, other, e.addr), []byte("PROXY TCP4 nonsense\r\n"), getReq("/healthz"))
	// A trusted peer must send one, and a valid one.
	refused(t, dialFrom(t, proxy, e.addr), nil, binaryReq())
	refused(t, dialFrom(t, proxy, e.addr), []byte("PROXY TCP9 1 2 3 4\r\n"), binaryReq())
	if n := e.lim.ProxyRefused(); n != 5 {
		t.Fatalf("ProxyRefused = %d, want 5", n)
	}
	if b, _ := e.srv.Counts(); b != 0 {
		t.Fatalf("%d binaries got through", b)
	}

	// An untrusted peer without a header is served as usual, with requests
	// that start like a PROXY signature too.
	wantStatus(t, e.request(t, other, getReq("/healthz")), http.StatusOK)
	wantStatus(t, e.request(t, other, "PUT /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"), http.StatusMethodNotAllowed)
	wantStatus(t, e.request(t, other, binaryReq()), http.StatusSwitchingProtocols)

	// Only those three (kept alive) are left: the refused ones gave their
	// slots back.
	eventually(t, "refused connections released", func() bool { byIP, total := e.lim.Stats(); return byIP == 3 && total == 3 })
}

// FuzzProxyHeader: whatever a trusted peer sends before a request, the
// server neither panics nor hangs (the client gives up after a deadline,
// the server's header timeout bounds its side), and every slot is given
// back once the connection is gone.
func FuzzProxyHeader(f *testing.F) {
	f.Add(v1("192.0.2.1"))
	f.Add(v2(f, "192.0.2.1"))
	f.Add(v2(f, "2001:db8::1"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP6 ::1 ::1 1 2\r\n"))
	f.Add([]byte("PROXY "))
	f.Add(proxyproto.SIGV2)
	f.Add(append(append([]byte(nil), proxyproto.SIGV2...), 0x21, 0x11, 0xff, 0xff))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte{})
	f.Add([]byte("GET / HTTP/1.1\r\n"))

	e := startEnv(f, Config{MaxConnsPerIP: 1 << 20, TrustedProxies: mustPrefixes(f, "127.0.0.40"), ProxyProtocol: true})
	req := []byte("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	f.Fuzz(func(t *testing.T, pre []byte) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.40")}, Timeout: 5 * time.Second}
		nc, err := d.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.(*net.TCPConn).SetLinger(0) // no TIME_WAIT pile-up over a long run
		_ = nc.SetDeadline(time.Now().Add(3 * time.Second))
		_, _ = nc.Write(append(append([]byte(nil), pre...), req...))
		_, _ = io.Copy(io.Discard, nc)
		nc.Close()
		eventually(t, "slots released", func() bool { byIP, total := e.lim.Stats(); return byIP == 0 && total == 0 })
	})
}
