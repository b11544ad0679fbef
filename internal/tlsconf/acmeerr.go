package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/acme"
)

// Local causes of a failed attempt, reported as IssueError.Type when the CA
// gave no ACME error.
var (
	errCache          = errors.New("tlsconf: certificate cache")
	errBadCertificate = errors.New("tlsconf: unusable certificate from the CA")
	errNoHTTP01       = errors.New("tlsconf: the CA offers no http-01 challenge")
	errAuthzState     = errors.New("tlsconf: unexpected authorization state")
	errInternal       = errors.New("tlsconf: internal error in the certificate manager")
	errAlreadyDue     = errors.New("tlsconf: the new certificate is already due for renewal (check the clock and the renewal window)")
)

// IssueError is why the latest attempt to get a certificate failed. It is
// what handshakes get while there is no certificate, and what acme_failed
// logs. It holds no key, token or key authorization: Detail is the CA's
// explanation with anything that could be a secret (challenge tokens, key
// authorizations, JWS fragments) removed; see redact.
type IssueError struct {
	Domain string
	// Stage is the step that failed: account, order, authorization,
	// finalize or certificate, or internal for a recovered panic.
	Stage string
	// Type is the ACME error type without its
	// "urn:ietf:params:acme:error:" prefix (connection, dns, unauthorized,
	// rateLimited, …), or, when the CA sent none, one of timeout, tls,
	// network, cache, bad_certificate, already_due, no_http01,
	// authz_state, internal, invalid or other.
	Type string
	// Status is the HTTP status of the CA's error response, 0 if none.
	Status int
	// Detail is the CA's explanation, redacted and at most 300 bytes.
	Detail string
	// RetryAt is when the next attempt is due.
	RetryAt time.Time
}

func (e *IssueError) Error() string {
	msg := fmt.Sprintf("tlsconf: no certificate for %s: %s failed (%s", e.Domain, e.Stage, e.Type)
	if e.Status != 0 {
		msg += fmt.Sprintf(", status %d", e.Status)
	}
	msg += ")"
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg + "; next attempt at " + e.RetryAt.UTC().Format(time.RFC3339)
}

// maxDetail bounds IssueError.Detail.
const maxDetail = 300

// newIssueError classifies err. Only the CA's problem type, status and
// (redacted) detail are kept, never err's own text, which may quote URLs
// with tokens in them.
func newIssueError(domain, stage string, err error, retryAt time.Time) *IssueError {
	e := &IssueError{Domain: domain, Stage: stage, RetryAt: retryAt}
	var (
		ae   *acme.Error
		aze  *acme.AuthorizationError
		oe   *acme.OrderError
		ne   net.Error
		ve   *tls.CertificateVerificationError
		uae  x509.UnknownAuthorityError
		host x509.HostnameError
	)
	switch {
	case errors.As(err, &aze):
		e.Type = "invalid"
		for _, ce := range aze.Errors {
			if errors.As(ce, &ae) {
				e.fromProblem(ae)
				break
			}
		}
	case errors.As(err, &oe):
		e.Type = "invalid"
		if oe.Problem != nil {
			e.fromProblem(oe.Problem)
		}
	case errors.As(err, &ae):
		e.fromProblem(ae)
	case errors.Is(err, context.DeadlineExceeded):
		e.Type = "timeout"
	case errors.As(err, &ve), errors.As(err, &uae), errors.As(err, &host):
		e.Type = "tls"
	case errors.As(err, &ne):
		e.Type = "network"
		if ne.Timeout() {
			e.Type = "timeout"
		}
	case errors.Is(err, errCache):
		e.Type = "cache"
	case errors.Is(err, errBadCertificate):
		e.Type = "bad_certificate"
	case errors.Is(err, errNoHTTP01):
		e.Type = "no_http01"
	case errors.Is(err, errAuthzState):
		e.Type = "authz_state"
	case errors.Is(err, errAlreadyDue):
		e.Type = "already_due"
	case errors.Is(err, errInternal):
		e.Type = "internal"
	default:
		e.Type = "other"
	}
	return e
}

// fromProblem copies what may be shown of an ACME problem document.
func (e *IssueError) fromProblem(ae *acme.Error) {
	e.Status = ae.StatusCode
	e.Detail = redact(ae.Detail)
	typ := ae.ProblemType
	if i := strings.LastIndexByte(typ, ':'); i >= 0 && strings.HasPrefix(typ, "urn:") {
		typ = typ[i+1:]
	}
	if typ == "" || !problemTypeRE.MatchString(typ) {
		typ = "other"
	}
	e.Type = typ
}

// problemTypeRE is what an ACME error type looks like after its prefix;
// anything else from the CA is reported as "other".
var problemTypeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,39}$`)

// challengePathRE matches an http-01 challenge path; the segment after it
// is the challenge token, whatever its length.
var challengePathRE = regexp.MustCompile(`(/\.well-known/acme-challenge/)[A-Za-z0-9_-]+`)

// urlRE matches a URL (scheme, authority, then path, query and fragment).
var urlRE = regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://([^/?#\s"'<>()\[\]{}]*)([^\s"'<>()\[\]{}]*)`)

// dottedRunRE matches base64url runs joined by dots: a word or host name,
// a JWS or JWT (header.payload.signature), a key authorization
// (token.thumbprint).
var dottedRunRE = regexp.MustCompile(`[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*`)

// redact removes what could be a secret from a CA's detail text (challenge
// tokens, key authorizations, JWS and JWT fragments, a URL's user
// information), turns control characters into spaces and cuts the result to
// maxDetail bytes. Everything else stays readable, URLs included: a scheme,
// a host, the words of a path (Let's Encrypt's documentation and unpause
// links) are never removed.
func redact(s string) string {
	s = challengePathRE.ReplaceAllString(s, "${1}[redacted]")
	var b strings.Builder
	last := 0
	for _, m := range urlRE.FindAllStringSubmatchIndex(s, -1) {
		b.WriteString(redactRuns(s[last:m[0]]))
		authority := s[m[2]:m[3]]
		if i := strings.LastIndexByte(authority, '@'); i >= 0 {
			authority = "[redacted]" + authority[i:]
		}
		b.WriteString(s[m[0]:m[2]]) // the scheme
		b.WriteString(authority)
		b.WriteString(redactRuns(s[m[4]:m[5]]))
		last = m[1]
	}
	b.WriteString(redactRuns(s[last:]))
	s = b.String()
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxDetail {
		cut := maxDetail
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.TrimSpace(s)
}

// redactRuns replaces each dotted base64url run holding a secret-like part
// by "[redacted]".
func redactRuns(s string) string {
	return dottedRunRE.ReplaceAllStringFunc(s, func(run string) string {
		for part := range strings.SplitSeq(run, ".") {
			if secretLike(part) {
				return "[redacted]"
			}
		}
		return run
	})
}

// secretLike reports whether a base64url run could be a secret: a JWS or
// JWT part (base64url JSON, starting "eyJ"), or a run of 40 or more
// characters with an upper-case letter or an underscore (a challenge token,
// a key thumbprint, a signature: 43 or more random base64url characters).
// Words, host names, hex digests and numbers are kept.
func secretLike(part string) bool {
	if strings.HasPrefix(part, "eyJ") && len(part) >= 16 {
		return true
	}
	return len(part) >= 40 && strings.ContainsFunc(part, func(r rune) bool { return r == '_' || (r >= 'A' && r <= 'Z') })
}
