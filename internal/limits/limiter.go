// Package limits answers abusive connections before any WebSocket upgrade:
// a per-IP upgrade rate, a per-IP cap on live connections and a cap on all
// live connections.
//
// Connections are counted at the TCP level: Listener wraps the relay's
// net.Listener so every accepted connection is counted against its client
// IP from accept until Close, through the TLS handshake and the request
// header, and (because an upgraded WebSocket keeps the hijacked wrapper)
// for the life of the WebSocket. A connection that would exceed a cap is
// not dropped silently: it is marked, and Middleware answers its first
// request with 429 (per-IP cap) or 503 (global cap), an empty body and
// Connection: close. The per-IP upgrade rate is a token bucket checked by
// Middleware for /v1/server and /v1/client only. Refusals on those two
// paths are counted through a Counter (relay.Stats satisfies it).
//
// The client IP is the socket peer, unless the peer is in TrustedProxies:
// then X-Forwarded-For is believed (the rightmost address that is not a
// trusted proxy) and the per-IP limits move to the HTTP layer, where they
// apply to that resolved address; a proxy carries many clients, so its own
// address is counted only by the global cap. With ProxyProtocol, trusted
// peers must open with a PROXY v1/v2 header whose source address becomes
// the connection's peer; a PROXY header from any other peer is refused.
//
// IPv6 clients are limited per /64, since one subscriber usually holds a
// whole /64 and can pick any address in it; IPv4 clients per address.
package limits

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

// Counter receives each refused upgrade request on /v1/server or
// /v1/client. *relay.Stats satisfies it.
type Counter interface {
	Upgrade(e relay.Endpoint, o relay.Outcome)
}

// Limiter enforces one Config across any number of listeners and servers.
// Its methods are safe for concurrent use.
type Limiter struct {
	cfg     Config
	count   Counter
	trusted []netip.Prefix
	rate    *rateLimiter

	mu      sync.Mutex
	byIP    map[netip.Addr]int // live connections per client key; no zero entries
	ipConns int                // sum of byIP
	total   int                // connections holding a global slot

	proxyRefused atomic.Int64
}

// New returns a Limiter for cfg (zero fields take the defaults). count may
// be nil, in which case refusals are not counted.
func New(cfg Config, count Counter) (*Limiter, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Limiter{
		cfg:   cfg,
		count: count,
		rate:  newRateLimiter(cfg.UpgradeRate, cfg.UpgradeBurst, cfg.Now),
		byIP:  make(map[netip.Addr]int),
	}
	for _, p := range cfg.TrustedProxies {
		l.trusted = append(l.trusted, normPrefix(p))
	}
	return l, nil
}

// Stats returns how many live connections are counted against a client IP
// and how many are counted against the global cap. Connections that were
// refused are in neither.
func (l *Limiter) Stats() (connsByIP int, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ipConns, l.total
}

// ConnsFrom returns the live connections counted against ip (for IPv6, its
// /64).
func (l *Limiter) ConnsFrom(ip netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byIP[keyOf(ip)]
}

// Buckets returns how many per-IP rate buckets are held (those not full).
func (l *Limiter) Buckets() int { return l.rate.size() }

// ProxyRefused returns how many connections were refused for their PROXY
// header: one from an untrusted peer, or a missing or malformed one from a
// trusted peer.
func (l *Limiter) ProxyRefused() int64 { return l.proxyRefused.Load() }

// Listener wraps ln so that every accepted connection is counted until it
// is closed. Serve the result with an http.Server whose ConnContext is
// l.ConnContext and whose Handler is wrapped by l.Middleware.
func (l *Limiter) Listener(ln net.Listener) net.Listener { return &listener{Listener: ln, l: l} }

// isTrusted reports whether a (unmapped, zone-free) is a trusted proxy.
func (l *Limiter) isTrusted(a netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// verdict is what the accounting decided for a connection.
type verdict uint8

const (
	admitted    verdict = iota
	overIPCap           // 429
	overConnCap         // 503
)

// admit takes a global slot and, if perIP, a slot for key. A refused
// connection takes neither.
func (l *Limiter) admit(key netip.Addr, perIP bool) verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	if perIP && l.byIP[key] >= l.cfg.MaxConnsPerIP {
		return overIPCap
	}
	if l.total >= l.cfg.MaxConns {
		return overConnCap
	}
	l.total++
	if perIP {
		l.byIP[key]++
		l.ipConns++
	}
	return admitted
}

// acquireIP takes a slot for key if it has one free.
func (l *Limiter) acquireIP(key netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byIP[key] >= l.cfg.MaxConnsPerIP {
		return false
	}
	l.byIP[key]++
	l.ipConns++
	return true
}

// release gives back a global slot (if global) and a slot for key (if
// perIP).
func (l *Limiter) release(global bool, key netip.Addr, perIP bool) {
	if !global && !perIP {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if global {
		l.total--
	}
	if perIP {
		if n := l.byIP[key] - 1; n > 0 {
			l.byIP[key] = n
		} else {
			delete(l.byIP, key)
		}
		l.ipConns--
	}
}

// keyOf is the accounting key of a client address: the address itself for
// IPv4, its /64 for IPv6.
func keyOf(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// normAddr unmaps a and drops its zone, so equal hosts compare equal.
func normAddr(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }
