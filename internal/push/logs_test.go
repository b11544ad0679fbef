package push

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestNoSecretsInLogs runs every kind of outcome with debug logging and
// searches the output for push tokens, keys, assertions, provider tokens
// and access tokens (checkLogs, run for every test, does the search).
func TestNoSecretsInLogs(t *testing.T) {
	e := newEnv(t)
	c := e.config()
	c.Burst = 2
	c.Timeout = 300 * time.Millisecond
	s := e.start(c)

	s.Wake("srv-1", "fcm", e.fcmToken())
	s.Wake("srv-2", "apns", e.apnsToken())
	settle(s)
	e.fcm.setRespond(reply(401, googleError(401, "UNAUTHENTICATED", "")))
	e.apns.setRespond(reply(410, `{"reason":"Unregistered"}`))
	s.Wake("srv-1", "fcm", e.fcmToken())
	s.Wake("srv-2", "apns", e.apnsToken())
	settle(s)
	s.Wake("srv-1", "fcm", e.fcmToken()) // rate limited
	e.oauth.setRespond(reply(400, `{"error":"invalid_grant"}`))
	s.Wake("srv-3", "fcm", e.fcmToken())
	settle(s)
	e.apns.setRespond(nil)
	e.apns.hold()
	s.Wake("srv-4", "apns", e.apnsToken()) // times out
	settle(s)
	e.checkLogs()

	logs := e.logs.String()
	for _, want := range []string{"outcome=sent", "outcome=rejected", "outcome=unregistered", "outcome=rate_limited", "stage=oauth", "cause=timeout"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	fps := regexp.MustCompile(`token_fp=(\S+)`).FindAllStringSubmatch(logs, -1)
	if len(fps) < 6 {
		t.Errorf("only %d fingerprints in logs", len(fps))
	}
	for _, m := range fps {
		if !regexp.MustCompile(`^[0-9a-f]{8}$`).MatchString(m[1]) {
			t.Errorf("fingerprint %q is not 8 hex digits", m[1])
		}
	}
}

// TestDedicatedTransport uses the Sender's own transports (no injection)
// against loopback servers: plain HTTP for OAuth and FCM, HTTP/2 without
// TLS for APNs.
func TestDedicatedTransport(t *testing.T) {
	e := newEnv(t)
	oauth := httptest.NewServer(e.oauthHandler())
	t.Cleanup(oauth.Close)
	fcm := httptest.NewServer(e.fcmHandler())
	t.Cleanup(fcm.Close)
	apns := httptest.NewUnstartedServer(e.apnsHandler())
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	apns.Config.Protocols = &p
	apns.Start()
	t.Cleanup(apns.Close)

	e.tokenURL = oauth.URL + "/token"
	c := e.config()
	c.Transport = nil
	c.FCMCredentials = serviceAccountJSON(e.tokenURL, testProject)
	c.FCMBaseURL = fcm.URL
	c.APNsBaseURL = apns.URL
	s := e.start(c)
	s.Wake("srv-1", "fcm", e.fcmToken())
	s.Wake("srv-1", "apns", e.apnsToken())
	settle(s)
	wantCounts(t, s, map[string]float64{"fcm/sent": 1, "apns/sent": 1})
}
