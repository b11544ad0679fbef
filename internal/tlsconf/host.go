package tlsconf

import (
	"net"
	"net/http"
	"strings"
)

// RequireHost returns a handler that passes a request to next only when its
// Host names domain, and otherwise answers 421 Misdirected Request with an
// empty body. The comparison ignores a port, letter case and one trailing
// dot on either side; a request without a Host is refused.
//
// A client that reuses one TLS connection for several names (or reaches the
// relay under an address it was not configured for) is thus told to retry
// elsewhere instead of being served. The handler is safe for concurrent use
// if next is.
func RequireHost(domain string, next http.Handler) http.Handler {
	want := strings.TrimSuffix(domain, ".")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := strings.TrimSuffix(hostWithoutPort(r.Host), ".")
		if got == "" || !strings.EqualFold(got, want) {
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hostWithoutPort strips a ":port" suffix (and IPv6 brackets that come with
// it) from a Host header value; a value without a port is returned as is.
func hostWithoutPort(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return hostport
}
