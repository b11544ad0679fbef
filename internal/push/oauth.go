package push

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// OAuth2 JWT-bearer grant (RFC 7523) for Google service accounts.
const (
	jwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	fcmScope       = "https://www.googleapis.com/auth/firebase.messaging"
	// assertionLife is the lifetime of the signed assertion; Google
	// accepts at most one hour.
	assertionLife = time.Hour
	// maxTokenLife caps how long an access token is cached, whatever the
	// endpoint claims; Google's last an hour.
	maxTokenLife = time.Hour
	// refreshMargin is how long before expiry a cached token is replaced.
	// Tokens living less than twice this are replaced at half-life.
	refreshMargin = 5 * time.Minute
	// maxAccessToken bounds an access token's length; Google's are a few
	// hundred bytes.
	maxAccessToken = 4 << 10
)

// accessTokens fetches and caches the OAuth2 access token FCM requests
// carry. At most one fetch runs at a time; callers arriving during a
// fetch wait for its result (or for their own context).
type accessTokens struct {
	cfg    *fcmSettings
	client *http.Client
	now    func() time.Time

	mu        sync.Mutex
	token     string     // cached access token; "" when none
	refreshAt time.Time  // when token stops being handed out
	fetch     *tokenCall // the fetch in progress, nil when none
}

// tokenCall is one fetch; done is closed once token and err are set.
type tokenCall struct {
	done  chan struct{}
	token string
	err   error
}

// get returns a valid access token, fetching one when the cache is empty
// or near expiry. Its errors are *failure values.
func (a *accessTokens) get(ctx context.Context) (string, error) {
	a.mu.Lock()
	if a.token != "" && a.now().Before(a.refreshAt) {
		tok := a.token
		a.mu.Unlock()
		return tok, nil
	}
	if c := a.fetch; c != nil {
		a.mu.Unlock()
		select {
		case <-c.done:
			return c.token, c.err
		case <-ctx.Done():
			return "", &failure{result{outcome: outcomeFailed, stage: "oauth", cause: causeOf(ctx.Err())}}
		}
	}
	c := &tokenCall{done: make(chan struct{})}
	a.fetch = c
	a.mu.Unlock()

	issued := a.now()
	tok, life, err := a.request(ctx, issued)

	a.mu.Lock()
	a.fetch = nil
	if err == nil && life > 0 {
		margin := refreshMargin
		if life < 2*margin {
			margin = life / 2
		}
		a.token, a.refreshAt = tok, issued.Add(life-margin)
	}
	a.mu.Unlock()
	c.token, c.err = tok, err
	close(c.done)
	return tok, err
}

// invalidate drops tok from the cache (after FCM refused it), unless a
// newer token has replaced it already.
func (a *accessTokens) invalidate(tok string) {
	a.mu.Lock()
	if a.token == tok {
		a.token = ""
	}
	a.mu.Unlock()
}

// request exchanges a freshly signed assertion for an access token and
// returns it with its lifetime (0: use once, do not cache).
func (a *accessTokens) request(ctx context.Context, now time.Time) (string, time.Duration, error) {
	fail := func(o outcome, status int, reason, cause string) (string, time.Duration, error) {
		return "", 0, &failure{result{outcome: o, stage: "oauth", status: status, reason: reason, cause: cause}}
	}
	assertion, err := signJWT(
		struct {
			Alg string `json:"alg"`
			Typ string `json:"typ"`
			Kid string `json:"kid,omitempty"`
		}{"RS256", "JWT", a.cfg.keyID},
		struct {
			Iss   string `json:"iss"`
			Scope string `json:"scope"`
			Aud   string `json:"aud"`
			Iat   int64  `json:"iat"`
			Exp   int64  `json:"exp"`
		}{a.cfg.clientEmail, fcmScope, a.cfg.tokenURL, now.Unix(), now.Add(assertionLife).Unix()},
		signRS256(a.cfg.key),
	)
	if err != nil {
		return fail(outcomeFailed, 0, "", "sign")
	}
	form := url.Values{"grant_type": {jwtBearerGrant}, "assertion": {assertion}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fail(outcomeFailed, 0, "", "network")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", userAgent)
	resp, err := a.client.Do(req)
	if err != nil {
		return fail(outcomeFailed, 0, "", causeOf(err))
	}
	body, readErr := readBounded(resp.Body, maxTokenBody)
	if resp.StatusCode != http.StatusOK {
		return fail(statusOutcome(resp.StatusCode), resp.StatusCode, parseOAuthError(body), "")
	}
	if readErr != nil {
		return fail(outcomeFailed, resp.StatusCode, "", causeOf(readErr))
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if json.Unmarshal(body, &tr) != nil || tr.AccessToken == "" || !visibleASCII(tr.AccessToken, maxAccessToken) ||
		(tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer")) {
		return fail(outcomeFailed, resp.StatusCode, "", "bad_response")
	}
	return tr.AccessToken, tokenLife(tr.ExpiresIn), nil
}

func tokenLife(expiresIn int64) time.Duration {
	if expiresIn <= 0 {
		return 0
	}
	if expiresIn > int64(maxTokenLife/time.Second) {
		return maxTokenLife
	}
	return time.Duration(expiresIn) * time.Second
}
