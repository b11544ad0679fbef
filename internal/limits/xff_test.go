package limits

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

func mustPrefixes(t testing.TB, s string) []netip.Prefix {
	t.Helper()
	p, err := ParsePrefixes(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestForwardedFor(t *testing.T) {
	lim, err := New(Config{TrustedProxies: mustPrefixes(t, "10.0.0.0/8, 2001:db8::/32, 127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	peer := netip.MustParseAddr("127.0.0.1")
	cases := []struct {
		name  string
		lines []string
		want  string
	}{
		{"no header", nil, "127.0.0.1"},
		{"one client", []string{"203.0.113.5"}, "203.0.113.5"},
		{"spoofed leftmost ignored", []string{"6.6.6.6, 203.0.113.5"}, "203.0.113.5"},
		{"trusted hops skipped", []string{"6.6.6.6, 203.0.113.5, 10.1.1.1, 10.2.2.2"}, "203.0.113.5"},
		{"lines joined in order", []string{"6.6.6.6", "203.0.113.5", "10.1.1.1"}, "203.0.113.5"},
		{"all trusted: leftmost", []string{"10.9.9.9, 10.1.1.1"}, "10.9.9.9"},
		{"malformed rightmost: peer", []string{"203.0.113.5, unknown"}, "127.0.0.1"},
		{"malformed after trusted: last good", []string{"garbage, 10.1.1.1"}, "10.1.1.1"},
		{"empty entry stops", []string{"203.0.113.5,"}, "127.0.0.1"},
		{"empty line stops", []string{"203.0.113.5", ""}, "127.0.0.1"},
		{"ports and spaces", []string{" 203.0.113.5:4711 ,\t10.1.1.1:80 "}, "203.0.113.5"},
		{"bracketed IPv6", []string{"[2001:db9::1]"}, "2001:db9::1"},
		{"bracketed IPv6 with port", []string{"[2001:db9::1]:443, 2001:db8::7"}, "2001:db9::1"},
		{"IPv4-mapped is IPv4", []string{"::ffff:203.0.113.5"}, "203.0.113.5"},
		{"zone dropped", []string{"fe80::1%eth0"}, "fe80::1"},
		{"hostname is malformed", []string{"example.com"}, "127.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := lim.forwardedFor(peer, tc.lines); got != netip.MustParseAddr(tc.want) {
				t.Fatalf("forwardedFor(%q) = %v, want %s", tc.lines, got, tc.want)
			}
		})
	}
}

func TestXForwardedForOverSockets(t *testing.T) {
	e := startEnv(t, Config{UpgradeBurst: 1, TrustedProxies: mustPrefixes(t, "127.0.0.20, 10.0.0.0/8")})
	const proxy, direct = "127.0.0.20", "127.0.0.21"
	xff := func(v string) string { return "X-Forwarded-For: " + v }

	// An untrusted peer's X-Forwarded-For is ignored: both requests are
	// the peer's, whatever they claim.
	wantStatus(t, e.request(t, direct, phoneReq(xff("198.51.100.1"))), http.StatusSwitchingProtocols)
	wantStatus(t, e.request(t, direct, phoneReq(xff("198.51.100.2"))), http.StatusTooManyRequests)

	// Through the trusted proxy each forwarded client has its own bucket,
	// and the proxy's own address is not limited.
	wantStatus(t, e.request(t, proxy, binaryReq(xff("198.51.100.1"))), http.StatusSwitchingProtocols)
	wantStatus(t, e.request(t, proxy, phoneReq(xff("198.51.100.2"))), http.StatusSwitchingProtocols)
	wantStatus(t, e.request(t, proxy, phoneReq(xff("198.51.100.1"))), http.StatusTooManyRequests)
	// A spoofed leftmost entry does not buy a fresh bucket.
	wantStatus(t, e.request(t, proxy, phoneReq(xff("6.6.6.6, 198.51.100.1"))), http.StatusTooManyRequests)
	// Nor does a chain through another trusted proxy, or split lines.
	wantStatus(t, e.request(t, proxy, phoneReq(xff("7.7.7.7, 198.51.100.2, 10.1.2.3"))), http.StatusTooManyRequests)
	wantStatus(t, e.request(t, proxy, phoneReq(xff("8.8.8.8"), xff("198.51.100.2"))), http.StatusTooManyRequests)
	wantStatus(t, e.request(t, proxy, phoneReq(xff("198.51.100.3"), xff("10.1.2.3"))), http.StatusSwitchingProtocols)
	if n := upgrades(e, relay.EndpointClient, relay.OutcomeRateLimited); n != 5 {
		t.Fatalf("client rate_limited = %d, want 5", n)
	}

	// The relay logs the forwarded client, not the proxy.
	eventually(t, "binary_connected logged", func() bool { return strings.Contains(e.logs.String(), "binary_connected") })
	if logs := e.logs.String(); !strings.Contains(logs, `"remote":"198.51.100.1"`) {
		t.Fatalf("relay log does not show the forwarded client:\n%s", logs)
	}
}

func TestXForwardedForConnCap(t *testing.T) {
	e := startEnv(t, Config{MaxConnsPerIP: 2, TrustedProxies: mustPrefixes(t, "127.0.0.22")})
	const proxy = "127.0.0.22"
	client := netip.MustParseAddr("198.51.100.7")
	xff := "X-Forwarded-For: 198.51.100.7"

	first := e.request(t, proxy, binaryReq(xff))
	wantStatus(t, first, http.StatusSwitchingProtocols)
	wantStatus(t, e.request(t, proxy, binaryReq(xff)), http.StatusSwitchingProtocols)
	e.waitBinaries(t, 2)
	if n := e.lim.ConnsFrom(client); n != 2 {
		t.Fatalf("forwarded client holds %d slots, want 2", n)
	}
	// The proxy's own connections are not capped per IP: it has four now.
	ex := e.request(t, proxy, binaryReq(xff))
	wantStatus(t, ex, http.StatusTooManyRequests)
	if n := upgrades(e, relay.EndpointServer, relay.OutcomeIPConnCap); n != 1 {
		t.Fatalf("server ip_connection_cap = %d, want 1", n)
	}
	// Only the request was refused: the proxy's connection stays usable
	// for its other clients.
	wantStatus(t, send(t, ex.nc, nil, getReq("/healthz", "X-Forwarded-For: 198.51.100.8")), http.StatusOK)
	wantStatus(t, e.request(t, proxy, binaryReq("X-Forwarded-For: 198.51.100.8")), http.StatusSwitchingProtocols)
	if n := e.lim.ConnsFrom(netip.MustParseAddr(proxy)); n != 0 {
		t.Fatalf("proxy address holds %d per-IP slots", n)
	}

	first.nc.Close()
	eventually(t, "forwarded client's slot freed", func() bool { return e.lim.ConnsFrom(client) == 1 })
	wantStatus(t, e.request(t, proxy, binaryReq(xff)), http.StatusSwitchingProtocols)
}

func TestClientIPAndRemoteAddr(t *testing.T) {
	lim, err := New(Config{TrustedProxies: mustPrefixes(t, "192.0.2.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ip netip.Addr
	var remote string
	h := lim.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip, remote = ClientIP(r), r.RemoteAddr
	}))
	r := httptest.NewRequest("GET", "/healthz", nil)
	r.RemoteAddr = "192.0.2.1:1234"
	r.Header.Set("X-Forwarded-For", "203.0.113.9")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if ip != netip.MustParseAddr("203.0.113.9") || remote != "203.0.113.9:0" {
		t.Fatalf("ClientIP %v, RemoteAddr %q", ip, remote)
	}
	r.RemoteAddr = "192.0.2.2:1234"
	h.ServeHTTP(httptest.NewRecorder(), r)
	if ip != netip.MustParseAddr("192.0.2.2") || remote != "192.0.2.2:1234" {
		t.Fatalf("untrusted: ClientIP %v, RemoteAddr %q", ip, remote)
	}
	if byIP, total := lim.Stats(); byIP != 0 || total != 0 {
		t.Fatalf("slots left after requests: %d, %d", byIP, total)
	}
	if got := ClientIP(httptest.NewRequest("GET", "/", nil)); got != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("ClientIP outside Middleware = %v", got)
	}
}

// FuzzClientIPFromXFF: any X-Forwarded-For lines from a trusted peer give
// either the peer or an address written in them, without panicking or
// leaking a slot.
func FuzzClientIPFromXFF(f *testing.F) {
	for _, s := range [][2]string{
		{"203.0.113.5", ""},
		{"6.6.6.6, 203.0.113.5, 10.1.1.1", "10.2.2.2"},
		{"[2001:db9::1]:443, 2001:db8::7", "unknown"},
		{",,,", " "},
		{"fe80::1%eth0", "::ffff:10.0.0.1"},
		{"10.0.0.1,10.0.0.2", ""},
	} {
		f.Add(s[0], s[1])
	}
	lim, err := New(Config{TrustedProxies: mustPrefixes(f, "10.0.0.0/8, 2001:db8::/32, 127.0.0.1")}, nil)
	if err != nil {
		f.Fatal(err)
	}
	peer := netip.MustParseAddr("127.0.0.1")
	var seen netip.Addr
	h := lim.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = ClientIP(r) }))
	f.Fuzz(func(t *testing.T, a, b string) {
		lines := []string{a, b}
		got := lim.forwardedFor(peer, lines)
		if got != peer && !inHeader(got, lines) {
			t.Fatalf("forwardedFor(%q) = %v: neither the peer nor in the header", lines, got)
		}
		if got.Zone() != "" || got.Is4In6() {
			t.Fatalf("result %v not normalised", got)
		}

		r := httptest.NewRequest("GET", "/healthz", nil)
		r.RemoteAddr = "127.0.0.1:80"
		r.Header["X-Forwarded-For"] = lines
		seen = netip.Addr{}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if seen != got {
			t.Fatalf("Middleware resolved %v, forwardedFor %v", seen, got)
		}
		if byIP, _ := lim.Stats(); byIP != 0 {
			t.Fatalf("%d per-IP slots leaked", byIP)
		}
	})
}

func inHeader(a netip.Addr, lines []string) bool {
	for _, l := range lines {
		for e := range strings.SplitSeq(l, ",") {
			if h, ok := parseHop(e); ok && h == a {
				return true
			}
		}
	}
	return false
}
