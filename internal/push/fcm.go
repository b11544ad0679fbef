package push

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
)

// fcm sends wakes through FCM HTTP v1: a data-less message with high
// Android priority, so the phone wakes and reconnects.
type fcm struct {
	sendURL string
	client  *http.Client
	tokens  *accessTokens
}

func newFCM(cfg *fcmSettings, client *http.Client, now nowFunc) *fcm {
	return &fcm{
		sendURL: cfg.sendURL,
		client:  client,
		tokens:  &accessTokens{cfg: cfg, client: client, now: now},
	}
}

// fcmMessage is the request body:
// {"message":{"token":"<t>","android":{"priority":"HIGH"}}}.
type fcmMessage struct {
	Message struct {
		Token   string `json:"token"`
		Android struct {
			Priority string `json:"priority"`
		} `json:"android"`
	} `json:"message"`
}

func (f *fcm) send(ctx context.Context, token string) result {
	access, err := f.tokens.get(ctx)
	if err != nil {
		return resultOf(err, "oauth")
	}
	var m fcmMessage
	m.Message.Token = token
	m.Message.Android.Priority = "HIGH"
	body, err := json.Marshal(&m)
	if err != nil {
		return result{outcome: outcomeFailed, stage: "send", cause: "bad_request"}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.sendURL, bytes.NewReader(body))
	if err != nil {
		return result{outcome: outcomeFailed, stage: "send", cause: "bad_request"}
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := f.client.Do(req)
	if err != nil {
		return resultOf(err, "send")
	}
	respBody, _ := readBounded(resp.Body, maxErrorBody) // a cut body only loses the reason
	r := result{outcome: statusOutcome(resp.StatusCode), stage: "send", status: resp.StatusCode}
	if r.outcome == outcomeSent {
		return r
	}
	status, code := parseFCMError(respBody)
	r.reason = code
	if r.reason == "" {
		r.reason = status
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || code == "UNREGISTERED":
		r.outcome = outcomeUnregistered
	case resp.StatusCode == http.StatusUnauthorized:
		// The access token was refused (revoked, or expired early): the
		// next wake fetches a new one.
		f.tokens.invalidate(access)
	}
	return r
}
