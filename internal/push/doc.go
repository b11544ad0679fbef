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
package push
