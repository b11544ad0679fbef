// Package tlsconf builds the TLS side of the relay: an ACME (Let's Encrypt)
// certificate manager bound to exactly one domain, a private directory for
// its account key and certificate, the plain-HTTP handler that answers its
// http-01 challenges, the Host check that turns away requests for other
// names, and a reloading source for certificates that an operator provides
// as PEM files.
//
// Every TLS configuration produced here requires TLS 1.2 or newer and offers
// only HTTP/1.1 through ALPN, because the relay serves WebSocket over
// HTTP/1.1.
//
// The ACME manager runs one scheduler goroutine between its Start and
// Close; nothing else in this package starts goroutines.
package tlsconf
