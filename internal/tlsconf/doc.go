// Package tlsconf builds the TLS side of the relay: a Let's Encrypt
// certificate manager bound to exactly one domain, a private directory for
// its certificate cache, the plain-HTTP handler that answers ACME http-01
// challenges, the Host check that turns away requests for other names, and a
// reloading source for certificates that an operator provides as PEM files.
//
// Every TLS configuration produced here requires TLS 1.2 or newer and offers
// only HTTP/1.1 through ALPN (plus the ACME tls-alpn-01 protocol for the
// autocert variant), because the relay serves WebSocket over HTTP/1.1.
//
// Nothing in this package starts goroutines of its own; the autocert manager
// it configures schedules renewal timers once it holds a certificate.
package tlsconf
