package limits

import (
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParsePrefixes(t *testing.T) {
	good := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  ", nil},
		{"10.0.0.0/8", []string{"10.0.0.0/8"}},
		{"10.1.2.3/8, 192.0.2.7 ,2001:db8::1,2001:db8::/32", []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::1/128", "2001:db8::/32"}},
		{"::ffff:192.0.2.7", []string{"192.0.2.7/32"}},
		{"::ffff:10.0.0.0/104", []string{"10.0.0.0/8"}},
	}
	for _, tc := range good {
		got, err := ParsePrefixes(tc.in)
		if err != nil {
			t.Fatalf("ParsePrefixes(%q): %v", tc.in, err)
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if !slices.Equal(s, tc.want) {
			t.Fatalf("ParsePrefixes(%q) = %v, want %v", tc.in, s, tc.want)
		}
	}
	for _, in := range []string{"10.0.0.0/33", "example.com", "10.0.0.1,,10.0.0.2", "10.0.0.1,", "fe80::1%eth0", "1.2.3", "10.0.0.0/8/8", "bad\nline"} {
		_, err := ParsePrefixes(in)
		if err == nil {
			t.Fatalf("ParsePrefixes(%q) succeeded", in)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("ParsePrefixes(%q) error spans lines: %q", in, err)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Config{}.WithDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if ok.UpgradeRate != 0.2 || ok.UpgradeBurst != 20 || ok.MaxConnsPerIP != 256 || ok.MaxConns != 100000 || ok.Now == nil {
		t.Fatalf("defaults = %+v", ok)
	}
	bad := []struct {
		mod  func(*Config)
		flag string
	}{
		{func(c *Config) { c.UpgradeRate = 0 }, "--upgrade-rate"},
		{func(c *Config) { c.UpgradeRate = -1 }, "--upgrade-rate"},
		{func(c *Config) { c.UpgradeRate = math.NaN() }, "--upgrade-rate"},
		{func(c *Config) { c.UpgradeRate = math.Inf(1) }, "--upgrade-rate"},
		{func(c *Config) { c.UpgradeBurst = 0 }, "--upgrade-burst"},
		{func(c *Config) { c.MaxConnsPerIP = 0 }, "--max-connections-per-ip"},
		{func(c *Config) { c.MaxConns = -5 }, "--max-connections"},
		{func(c *Config) { c.ProxyProtocol = true }, "--proxy-protocol"},
		{func(c *Config) { c.TrustedProxies = []netip.Prefix{{}} }, "--trusted-proxies"},
	}
	for _, tc := range bad {
		c := ok
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.flag) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("Validate = %v, want a one-line error about %s", err, tc.flag)
		}
	}
	c := ok
	c.ProxyProtocol, c.TrustedProxies = true, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if err := c.Validate(); err != nil {
		t.Fatalf("proxy protocol with trusted proxies: %v", err)
	}
}

func TestRateBuckets(t *testing.T) {
	clk := newClock()
	rl := newRateLimiter(1, 3, clk.Now)
	k := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		if !rl.allow(k) {
			t.Fatalf("request %d refused within the burst", i+1)
		}
	}
	if rl.allow(k) {
		t.Fatal("fourth request allowed")
	}
	clk.Advance(999 * time.Millisecond)
	if rl.allow(k) {
		t.Fatal("allowed before a token refilled")
	}
	clk.Advance(time.Millisecond)
	if !rl.allow(k) || rl.allow(k) {
		t.Fatal("want exactly one token after one second")
	}
	// A long idle refills to the burst, not beyond.
	clk.Advance(time.Hour)
	n := 0
	for rl.allow(k) {
		n++
	}
	if n != 3 {
		t.Fatalf("after an hour %d requests allowed, want 3", n)
	}
}

func TestRateBucketsBounded(t *testing.T) {
	clk := newClock()
	rl := newRateLimiter(0.2, 20, clk.Now)
	rl.max = 1000
	addr := func(i int) netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	// A flood of distinct addresses never grows the map past max.
	for i := range 5000 {
		if !rl.allow(addr(i)) {
			t.Fatalf("fresh address %d refused", i)
		}
		if rl.size() > rl.max {
			t.Fatalf("map grew to %d", rl.size())
		}
	}
	// Buckets that refilled are dropped by the periodic sweep.
	clk.Advance(sweepEvery + time.Minute)
	rl.allow(addr(0))
	if n := rl.size(); n != 1 {
		t.Fatalf("after the sweep %d buckets held, want 1", n)
	}
}

func TestKeyOf(t *testing.T) {
	cases := map[string]string{
		"192.0.2.1":            "192.0.2.1",
		"::ffff:192.0.2.1":     "192.0.2.1",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::",
		"fe80::1%eth0":         "fe80::",
	}
	for in, want := range cases {
		if got := keyOf(netip.MustParseAddr(in)); got != netip.MustParseAddr(want) {
			t.Fatalf("keyOf(%s) = %v, want %s", in, got, want)
		}
	}
}
