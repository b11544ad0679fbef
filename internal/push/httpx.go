package push

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Response bodies are read with a small bound: only a short code is used.
const (
	maxErrorBody = 4 << 10
	maxTokenBody = 16 << 10
)

// userAgent identifies the relay to the push services.
const userAgent = "pyrycode-relay"

// newTransport returns a dedicated transport with no proxy. h2only makes
// it speak HTTP/2 only (over TLS, or without TLS for http URLs), as APNs
// requires.
func newTransport(h2only bool) *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	var p http.Protocols
	if h2only {
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
		p.SetHTTP2(true)
	}
	return &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   true,
		Protocols:           &p,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
}

// newClient wraps rt in a client that never follows redirects: a 3xx is
// returned as the response (and counted as a failure).
func newClient(rt http.RoundTripper) *http.Client {
	return &http.Client{
		Transport: rt,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// readBounded reads at most limit bytes of body and closes it. A body
// longer than that is cut; the connection may then not be reused, which
// is fine for the rare error response that large. The error is the read's
// (a timeout, a reset), for callers that need the whole body.
func readBounded(body io.ReadCloser, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(body, limit))
	body.Close()
	return b, err
}

// result is what one send came to, in terms safe to log.
type result struct {
	outcome outcome
	stage   string // "oauth" when the access-token fetch decided it, else "send"
	status  int    // HTTP status, 0 when there was no response
	reason  string // the service's reason code, when it gave one
	cause   string // why there was no usable response: timeout, canceled, tls, dns, connect, network, bad_response, sign
}

// failure is a result carried as an error (from the access-token fetch).
type failure struct{ r result }

func (f *failure) Error() string {
	msg := "push: " + f.r.stage + " " + f.r.outcome.String()
	if f.r.status != 0 {
		msg += " status " + strconv.Itoa(f.r.status)
	}
	for _, s := range []string{f.r.reason, f.r.cause} {
		if s != "" {
			msg += " " + s
		}
	}
	return msg
}

// resultOf turns an error from a request into a result. It never keeps
// the error's text: a *url.Error quotes the URL, and an APNs URL holds the
// device token.
func resultOf(err error, stage string) result {
	var f *failure
	if errors.As(err, &f) {
		return f.r
	}
	return result{outcome: outcomeFailed, stage: stage, cause: causeOf(err)}
}

// causeOf classifies a transport error without quoting it.
func causeOf(err error) string {
	var (
		netErr   net.Error
		dnsErr   *net.DNSError
		opErr    *net.OpError
		verifyEr *tls.CertificateVerificationError
		alertErr tls.AlertError
		recErr   tls.RecordHeaderError
		authErr  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		certErr  x509.CertificateInvalidError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.As(err, &verifyEr), errors.As(err, &alertErr), errors.As(err, &recErr),
		errors.As(err, &authErr), errors.As(err, &hostErr), errors.As(err, &certErr):
		return "tls"
	case errors.As(err, &dnsErr):
		return "dns"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return "connect"
	}
	return "network"
}

// statusOutcome maps an HTTP status to an outcome for responses that
// carried no more specific answer.
func statusOutcome(status int) outcome {
	switch {
	case status >= 200 && status < 300:
		return outcomeSent
	case status >= 400 && status < 500:
		return outcomeRejected
	}
	return outcomeFailed // 5xx, and 1xx/3xx which a send should never get
}

// fingerprint identifies a push token in logs without revealing it: the
// first 4 bytes of its SHA-256, in hex.
func fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:4])
}
