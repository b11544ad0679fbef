// Package push wakes phones through their platform's push service when the
// binary asks for it: Firebase Cloud Messaging (HTTP v1, OAuth2 access
// tokens from a Google service-account key) for "fcm" and the Apple Push
// Notification service (HTTP/2, ES256 provider tokens) for "apns". A wake
// carries no content: the phone only learns that it should reconnect.
//
// A Sender admits each wake before any network work: a token bucket per
// server-id and a relay-wide cap on sends in flight. A refused wake is
// dropped and counted, never queued or retried, so Wake never blocks its
// caller (the binary's read loop). Admitted wakes are sent on their own
// goroutine, bounded by the in-flight cap and a per-send timeout.
//
// Secrets stay secret: push tokens, keys, provider tokens and access tokens
// are never logged or put in an error. A push token appears in logs only as
// an 8-hex-digit fingerprint (the first 4 bytes of its SHA-256). Failures
// carry the HTTP status and the service's reason code, nothing else from
// the response.
//
// The OAuth2 JWT-bearer grant (oauth.go) and the JWS signing (jwt.go) are
// written here on purpose rather than taken from golang.org/x/oauth2/google.
// That package would add two modules and eleven packages (external-account
// and workload-identity exchange, impersonation, a metadata-server client)
// for the one grant used here, and it behaves differently where it matters
// to the relay: its cached token source holds a lock across the fetch and
// takes no per-call context, so every send would queue behind a slow token
// endpoint instead of leaving at its own 10 s deadline; by default it
// refreshes 10 s before expiry (here: 5 minutes, one fetch at a time); it
// reads up to 1 MiB of a token response (here: 16 KiB); and its error text
// quotes the response body, where this package keeps only the status and
// the reason code. APNs needs an ES256 provider token in any case, which the same
// signJWT builds, so the JWS code would stay either way.
package push
