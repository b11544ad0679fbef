package limits

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
)

// Defaults for the zero fields of a Config.
const (
	DefaultUpgradeRate   = 0.2    // upgrades per second per client IP
	DefaultUpgradeBurst  = 20     // upgrades a fresh client IP may make at once
	DefaultMaxConnsPerIP = 256    // live connections per client IP
	DefaultMaxConns      = 100000 // live connections in all
)

// maxUpgradeRate keeps the token interval at one nanosecond or more.
const maxUpgradeRate = 1e9

// Config holds the abuse limits. New fills zero numeric fields with the
// defaults above before validating.
type Config struct {
	UpgradeRate   float64 // per-IP upgrade requests per second (token refill)
	UpgradeBurst  int     // per-IP upgrade requests allowed at once (bucket size)
	MaxConnsPerIP int     // live TCP connections per client IP; more get 429
	MaxConns      int     // live TCP connections in all; more get 503

	// TrustedProxies are the peers whose X-Forwarded-For (and, with
	// ProxyProtocol, PROXY header) is believed. Empty trusts nobody.
	TrustedProxies []netip.Prefix
	// ProxyProtocol makes every connection from a TrustedProxies peer start
	// with a PROXY protocol v1 or v2 header (required), and refuses any
	// connection from another peer that sends one.
	ProxyProtocol bool

	// Now is the clock for the rate limiter; nil means time.Now.
	Now func() time.Time
}

// WithDefaults returns c with its zero numeric fields set to the defaults.
func (c Config) WithDefaults() Config {
	if c.UpgradeRate == 0 {
		c.UpgradeRate = DefaultUpgradeRate
	}
	if c.UpgradeBurst == 0 {
		c.UpgradeBurst = DefaultUpgradeBurst
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports the first bad field as a one-line error naming its flag.
// It checks c as given: a zero rate, burst or cap is an error here (New
// applies WithDefaults first).
func (c Config) Validate() error {
	switch {
	case !(c.UpgradeRate > 0) || math.IsInf(c.UpgradeRate, 0) || c.UpgradeRate > maxUpgradeRate:
		return fmt.Errorf("--upgrade-rate must be above 0 and at most %g per second (got %v)", float64(maxUpgradeRate), c.UpgradeRate)
	case c.UpgradeBurst < 1:
		return fmt.Errorf("--upgrade-burst must be at least 1 (got %d)", c.UpgradeBurst)
	case c.MaxConnsPerIP < 1:
		return fmt.Errorf("--max-connections-per-ip must be at least 1 (got %d)", c.MaxConnsPerIP)
	case c.MaxConns < 1:
		return fmt.Errorf("--max-connections must be at least 1 (got %d)", c.MaxConns)
	case c.ProxyProtocol && len(c.TrustedProxies) == 0:
		return errors.New("--proxy-protocol needs --trusted-proxies (PROXY headers are accepted only from them)")
	}
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			return errors.New("--trusted-proxies: invalid prefix")
		}
	}
	return nil
}

// ParsePrefixes parses a comma-separated list of CIDR prefixes and bare IP
// addresses (taken as /32 or /128), as given to --trusted-proxies. Spaces
// around entries are ignored; an empty or blank string is an empty list.
// Host bits are masked off and IPv4-mapped IPv6 prefixes become IPv4 ones,
// so the result matches the unmapped addresses the limiter compares.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		p, err := parsePrefix(strings.TrimSpace(item))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("empty entry in the list")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR prefix", s)
		}
		return normPrefix(p), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// normPrefix masks p and turns an IPv4-mapped IPv6 prefix into IPv4.
func normPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}
