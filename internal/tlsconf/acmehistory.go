package tlsconf

import (
	"encoding/json"
	"errors"
	"time"

	"golang.org/x/crypto/acme"
)

const (
	// rateWindow and maxAttemptsPerWindow keep failed attempts under Let's
	// Encrypt's limit of 5 failed validations per hostname per hour, with
	// one to spare: no hour holds more than 4 attempts after failures.
	rateWindow           = time.Hour
	maxAttemptsPerWindow = 4
	// maxRetryAfter caps the wait a CA's Retry-After can impose (Let's
	// Encrypt's longest limits are weekly).
	maxRetryAfter = 8 * 24 * time.Hour
)

// failureRecord is what the cache keeps of failed attempts, so that a
// restart neither resets the backoff nor forgets how many attempts the
// last hour already holds. It holds nothing secret: times, counts and the
// redacted failure shown in acme_failed.
type failureRecord struct {
	Directory   string      `json:"directory"`   // the ACME directory the attempts went to
	Recent      []time.Time `json:"recent"`      // failed attempts within rateWindow, oldest first
	Consecutive int         `json:"consecutive"` // consecutive failures, for the backoff
	RetryAt     time.Time   `json:"retry_at"`    // earliest next attempt
	Stage       string      `json:"stage"`
	Type        string      `json:"type"`
	Status      int         `json:"status"`
	Detail      string      `json:"detail"`
}

// failuresName is the cache entry holding the failureRecord.
func (a *ACME) failuresName() string { return a.domain + "+failures" }

// recentWithin returns the times in ts after now-rateWindow.
func recentWithin(ts []time.Time, now time.Time) []time.Time {
	var out []time.Time
	for _, t := range ts {
		if t.After(now.Add(-rateWindow)) {
			out = append(out, t)
		}
	}
	return out
}

// nextAttemptAt is when the attempt after a failure at now may be made: the
// backoff for consecutive failures, at least the CA's Retry-After, and late
// enough that no rateWindow holds more than maxAttemptsPerWindow attempts
// (recent holds the failures within the window, now included).
func nextAttemptAt(now time.Time, backoff, retryAfter time.Duration, recent []time.Time) time.Time {
	next := now.Add(backoff)
	if retryAfter > 0 {
		next = maxTime(next, now.Add(min(retryAfter, maxRetryAfter)))
	}
	if n := len(recent); n >= maxAttemptsPerWindow {
		next = maxTime(next, recent[n-maxAttemptsPerWindow].Add(rateWindow))
	}
	return next
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// retryAfterOf is the pause a CA asked for with a rateLimited error, or 0.
func retryAfterOf(err error) time.Duration {
	var ae *acme.Error
	if !errors.As(err, &ae) {
		return 0
	}
	d, ok := acme.RateLimit(ae)
	if !ok || d < 0 {
		return 0
	}
	return d
}

// saveFailures writes rec to the cache; a failure to write is logged, the
// in-memory backoff applies regardless.
func (a *ACME) saveFailures(rec failureRecord) {
	data, err := json.Marshal(rec)
	if err == nil {
		err = a.cache.put(a.failuresName(), data)
	}
	if err != nil {
		a.log.Warn("acme_cache_failed", "domain", a.domain, "err", err)
	}
}

// clearFailures removes the record after a success.
func (a *ACME) clearFailures() {
	if err := a.cache.remove(a.failuresName()); err != nil {
		a.log.Warn("acme_cache_failed", "domain", a.domain, "err", err)
	}
}

// loadFailures restores the backoff from the cache at start-up. A record
// for another directory (whose rate limits are not this one's) or one that
// cannot be read is ignored.
func (a *ACME) loadFailures() {
	data, err := a.cache.get(a.failuresName())
	if err != nil {
		return
	}
	var rec failureRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec.Directory != a.client.DirectoryURL {
		return
	}
	now := a.now()
	a.recent = recentWithin(rec.Recent, now)
	a.failures = max(rec.Consecutive, 0)
	if !rec.RetryAt.After(now) {
		return
	}
	a.retryAt = rec.RetryAt
	a.lastErr = &IssueError{Domain: a.domain, Stage: rec.Stage, Type: rec.Type, Status: rec.Status,
		Detail: redact(rec.Detail), RetryAt: rec.RetryAt}
	a.log.Info("acme_backoff_restored", "domain", a.domain, "failures", a.failures,
		"retry_in", rec.RetryAt.Sub(now).Round(time.Second).String())
}
