package limits

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/pyrycode/pyrycode-relay/internal/relay"
)

type connKey struct{}
type clientKey struct{}

// ConnContext is the http.Server ConnContext hook: it puts the counted
// connection in the context its requests inherit, so Middleware can find
// its verdict. It looks through *tls.Conn (and anything else with a
// NetConn method) to find the connection Listener made. It never blocks.
func (l *Limiter) ConnContext(ctx context.Context, nc net.Conn) context.Context {
	for range 8 {
		switch x := nc.(type) {
		case *conn:
			if x.l == l {
				return context.WithValue(ctx, connKey{}, x)
			}
			return ctx
		case interface{ NetConn() net.Conn }:
			nc = x.NetConn()
		default:
			return ctx
		}
	}
	return ctx
}

// Middleware answers, before next sees the request:
//
//   - a request on a connection that was over a cap when accepted: 429
//     (per-IP cap) or 503 (global cap), then closes the connection;
//   - when the peer is a trusted proxy, a request whose forwarded client
//     already has MaxConnsPerIP connections: 429;
//   - a request to /v1/server or /v1/client whose client IP has no upgrade
//     token left: 429.
//
// Refusals have an empty body and, on the relay's endpoints, are counted
// with OutcomeConnCap, OutcomeIPConnCap or OutcomeRateLimited. A request
// that passes carries its client IP (see ClientIP) and has RemoteAddr set
// to it.
func (l *Limiter) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(*conn)
		var src netip.AddrPort
		if c != nil {
			v, s := c.state()
			if (v == overIPCap || v == overConnCap) && r.URL.Path == "/healthz" {
				// Health checks are never refused (contract §9); the
				// over-cap connection is closed after the answer.
				w.Header().Set("Connection", "close")
				next.ServeHTTP(w, r)
				return
			}
			switch v {
			case overIPCap:
				l.refuse(w, r, http.StatusTooManyRequests, relay.OutcomeIPConnCap, true)
				return
			case overConnCap:
				l.refuse(w, r, http.StatusServiceUnavailable, relay.OutcomeConnCap, true)
				return
			}
			src = s
		} else if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			src = netip.AddrPortFrom(normAddr(ap.Addr()), ap.Port())
		}

		client := src
		viaProxy := src.IsValid() && l.isTrusted(src.Addr())
		if viaProxy {
			if a := l.forwardedFor(src.Addr(), r.Header.Values("X-Forwarded-For")); a != src.Addr() {
				client = netip.AddrPortFrom(a, 0)
			}
		}

		// The per-IP cap for a proxied client is held for the request, and
		// for the connection's life if the request upgrades it.
		var sw *slotWriter
		if viaProxy {
			key := keyOf(client.Addr())
			if !l.acquireIP(key) {
				l.refuse(w, r, http.StatusTooManyRequests, relay.OutcomeIPConnCap, false)
				return
			}
			sw = &slotWriter{ResponseWriter: w, c: c, key: key, client: client}
			defer func() {
				if !sw.adopted {
					l.release(false, key, true)
				}
			}()
			w = sw
		}

		if _, ok := relay.EndpointOf(r.URL.Path); ok && client.IsValid() && !l.rate.allow(keyOf(client.Addr())) {
			l.refuse(w, r, http.StatusTooManyRequests, relay.OutcomeRateLimited, false)
			return
		}

		if client.IsValid() {
			r = r.WithContext(context.WithValue(r.Context(), clientKey{}, client.Addr()))
			r.RemoteAddr = client.String() // port 0 for a forwarded client
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers a refused request with status and an empty body, counting
// it if it was for one of the relay's endpoints.
func (l *Limiter) refuse(w http.ResponseWriter, r *http.Request, status int, o relay.Outcome, closeConn bool) {
	if ep, ok := relay.EndpointOf(r.URL.Path); ok && l.count != nil {
		l.count.Upgrade(ep, o)
	}
	if closeConn {
		w.Header().Set("Connection", "close")
	}
	w.WriteHeader(status)
}

// ClientIP returns the client address Middleware resolved for r: the
// socket peer, the PROXY header's source, or the forwarded client. Outside
// Middleware it falls back to r.RemoteAddr's address (invalid if that does
// not parse).
func ClientIP(r *http.Request) netip.Addr {
	if a, ok := r.Context().Value(clientKey{}).(netip.Addr); ok {
		return a
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return normAddr(ap.Addr())
}

// forwardedFor resolves the client behind peer, a trusted proxy, from the
// X-Forwarded-For lines in order: walking from the right, it skips trusted
// proxies and returns the first address that is not one. A malformed entry
// stops the walk there, as does running out of entries; either way the
// last address read (or peer) is returned, since nothing further left can
// be believed.
func (l *Limiter) forwardedFor(peer netip.Addr, lines []string) netip.Addr {
	last := peer
	for i := len(lines) - 1; i >= 0; i-- {
		v := lines[i]
		for {
			j := strings.LastIndexByte(v, ',')
			a, ok := parseHop(v[j+1:])
			if !ok {
				return last
			}
			if !l.isTrusted(a) {
				return a
			}
			last = a
			if j < 0 {
				break
			}
			v = v[:j]
		}
	}
	return last
}

// parseHop parses one X-Forwarded-For entry: an IP address, optionally
// bracketed (IPv6) or with a port, surrounded by optional spaces or tabs.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.Trim(s, " \t")
	if s == "" {
		return netip.Addr{}, false
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return normAddr(a), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return normAddr(ap.Addr()), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return normAddr(a), true
		}
	}
	return netip.Addr{}, false
}

// slotWriter hands the HTTP-layer slot of a proxied client to the
// connection when the request hijacks it (a WebSocket upgrade).
type slotWriter struct {
	http.ResponseWriter
	c       *conn
	key     netip.Addr
	client  netip.AddrPort
	adopted bool
}

func (w *slotWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.c != nil {
		w.adopted = w.c.adopt(w.key, w.client)
	}
	return nc, brw, err
}

func (w *slotWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *slotWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
