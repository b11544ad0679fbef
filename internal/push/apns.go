package push

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// APNs provider tokens: Apple refuses one older than an hour and one
// replaced more often than every 20 minutes.
const (
	providerTokenLife = 50 * time.Minute
	providerTokenMin  = 20 * time.Minute
)

// apnsBody makes a background push: no alert, sound or badge; the app is
// woken and reconnects.
const apnsBody = `{"aps":{"content-available":1}}`

// apns sends wakes through APNs over HTTP/2 with token-based auth.
type apns struct {
	baseURL string
	topic   string
	client  *http.Client
	tokens  *providerTokens
}

func newAPNs(cfg *apnsSettings, client *http.Client, now nowFunc) *apns {
	return &apns{
		baseURL: cfg.baseURL,
		topic:   cfg.topic,
		client:  client,
		tokens:  &providerTokens{cfg: cfg, now: now},
	}
}

func (a *apns) send(ctx context.Context, token string) result {
	jwt, err := a.tokens.get()
	if err != nil {
		return result{outcome: outcomeFailed, stage: "send", cause: "sign"}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		a.baseURL+"/3/device/"+url.PathEscape(token), strings.NewReader(apnsBody))
	if err != nil {
		return result{outcome: outcomeFailed, stage: "send", cause: "bad_request"}
	}
	req.Header.Set("Apns-Push-Type", "background")
	req.Header.Set("Apns-Priority", "5")
	req.Header.Set("Apns-Topic", a.topic)
	req.Header.Set("Authorization", "bearer "+jwt)
	req.Header.Set("User-Agent", userAgent)
	resp, err := a.client.Do(req)
	if err != nil {
		return resultOf(err, "send")
	}
	body, _ := readBounded(resp.Body, maxErrorBody) // a cut body only loses the reason
	r := result{outcome: statusOutcome(resp.StatusCode), stage: "send", status: resp.StatusCode}
	if r.outcome == outcomeSent {
		return r
	}
	r.reason = parseAPNsError(body)
	switch {
	case resp.StatusCode == http.StatusGone || r.reason == "Unregistered" || r.reason == "BadDeviceToken":
		r.outcome = outcomeUnregistered
	case r.reason == "ExpiredProviderToken":
		a.tokens.invalidate(jwt)
	}
	return r
}

// providerTokens signs and caches the APNs provider token (ES256 JWT).
type providerTokens struct {
	cfg *apnsSettings
	now nowFunc

	mu     sync.Mutex
	token  string    // "" when none
	issued time.Time // the token's iat
}

// get returns the cached token, or signs a new one when there is none or
// it is providerTokenLife old. Signing is local and quick, so it is done
// under the lock.
func (p *providerTokens) get() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if age := now.Sub(p.issued); p.token != "" && age >= 0 && age < providerTokenLife {
		return p.token, nil
	}
	tok, err := signJWT(
		struct {
			Alg string `json:"alg"`
			Kid string `json:"kid"`
		}{"ES256", p.cfg.keyID},
		struct {
			Iss string `json:"iss"`
			Iat int64  `json:"iat"`
		}{p.cfg.teamID, now.Unix()},
		signES256(p.cfg.key),
	)
	if err != nil {
		return "", err
	}
	p.token, p.issued = tok, now
	return tok, nil
}

// invalidate drops tok after APNs called it expired, unless it is younger
// than Apple's minimum refresh interval (then the clock is off and a new
// token would only add TooManyProviderTokenUpdates).
func (p *providerTokens) invalidate(tok string) {
	p.mu.Lock()
	if p.token == tok && p.now().Sub(p.issued) >= providerTokenMin {
		p.token = ""
	}
	p.mu.Unlock()
}
