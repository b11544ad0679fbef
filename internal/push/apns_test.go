package push

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAPNsRequest checks the exact request APNs receives over HTTP/2 (the
// fake verifies path, headers, body and the ES256 provider token).
func TestAPNsRequest(t *testing.T) {
	e := newEnv(t)
	s := e.start(e.config())
	tok := e.apnsToken()
	s.Wake("srv-1", "apns", tok)
	settle(s)

	wantCounts(t, s, map[string]float64{"apns/sent": 1})
	seen := e.apnsRequests()
	if len(seen) != 1 || seen[0].token != tok {
		t.Fatalf("APNs saw %+v", seen)
	}
	if seen[0].iat != e.clock.Now().Unix() {
		t.Errorf("iat = %d, want %d", seen[0].iat, e.clock.Now().Unix())
	}
	if hits, _ := e.oauth.stats(); hits != 0 {
		t.Errorf("token endpoint asked %d times for an APNs wake", hits)
	}
	if got := histCount(t, s, "apns"); got != 1 {
		t.Errorf("push_seconds{apns} count = %d, want 1", got)
	}
}

// TestAPNsProviderTokenReuse: one provider token serves for 50 minutes.
func TestAPNsProviderTokenReuse(t *testing.T) {
	e := newEnv(t)
	c := e.config()
	c.Burst = 100
	s := e.start(c)
	wake := func() {
		s.Wake("srv-1", "apns", e.apnsToken())
		settle(s)
	}
	start := e.clock.Now().Unix()
	wake()
	wake()
	e.clock.Advance(50*time.Minute - time.Second)
	wake()
	e.clock.Advance(time.Second)
	wake()
	seen := e.apnsRequests()
	if len(seen) != 4 {
		t.Fatalf("APNs saw %d requests", len(seen))
	}
	for i := range 3 {
		if seen[i].jwt != seen[0].jwt || seen[i].iat != start {
			t.Errorf("request %d did not reuse the first provider token", i)
		}
	}
	if seen[3].jwt == seen[0].jwt || seen[3].iat != start+50*60 {
		t.Errorf("provider token not renewed at 50 minutes (iat %d)", seen[3].iat)
	}
	wantCounts(t, s, map[string]float64{"apns/sent": 4})
}

// TestAPNsExpiredProviderToken: an ExpiredProviderToken answer drops a
// token old enough to be replaced, and keeps a young one (replacing it
// would only earn TooManyProviderTokenUpdates).
func TestAPNsExpiredProviderToken(t *testing.T) {
	e := newEnv(t)
	c := e.config()
	c.Burst = 100
	s := e.start(c)
	wake := func() {
		s.Wake("srv-1", "apns", e.apnsToken())
		settle(s)
	}
	e.apns.setRespond(reply(403, `{"reason":"ExpiredProviderToken"}`))
	wake()
	wake()
	e.clock.Advance(20 * time.Minute)
	wake()
	e.apns.setRespond(nil)
	wake()
	seen := e.apnsRequests()
	if seen[1].jwt != seen[0].jwt || seen[2].jwt != seen[0].jwt {
		t.Error("a young provider token was replaced")
	}
	if seen[3].jwt == seen[0].jwt {
		t.Error("an expired provider token was kept")
	}
	wantCounts(t, s, map[string]float64{"apns/rejected": 3, "apns/sent": 1})
}

func TestAPNsErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		respond http.HandlerFunc
		outcome string
		log     string
	}{
		{"410 Unregistered", reply(410, `{"reason":"Unregistered","timestamp":1700000000000}`), "unregistered", "status=410 reason=Unregistered"},
		{"410 no body", reply(410, ``), "unregistered", "status=410"},
		{"400 BadDeviceToken", reply(400, `{"reason":"BadDeviceToken"}`), "unregistered", "status=400 reason=BadDeviceToken"},
		{"400 DeviceTokenNotForTopic", reply(400, `{"reason":"DeviceTokenNotForTopic"}`), "rejected", "status=400 reason=DeviceTokenNotForTopic"},
		{"403 InvalidProviderToken", reply(403, `{"reason":"InvalidProviderToken"}`), "rejected", "status=403 reason=InvalidProviderToken"},
		{"429 TooManyRequests", reply(429, `{"reason":"TooManyRequests"}`), "rejected", "status=429 reason=TooManyRequests"},
		{"500", reply(500, `{"reason":"InternalServerError"}`), "failed", "status=500 reason=InternalServerError"},
		{"503", reply(503, `{"reason":"ServiceUnavailable"}`), "failed", "status=503 reason=ServiceUnavailable"},
		{"reason with junk", reply(400, `{"reason":"Bad Token\nforged=1"}`), "rejected", "status=400"},
		{"307 not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/3/device/elsewhere", http.StatusTemporaryRedirect)
		}, "failed", "status=307"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.apns.setRespond(tc.respond)
			s := e.start(e.config())
			s.Wake("srv-1", "apns", e.apnsToken())
			settle(s)
			wantCounts(t, s, map[string]float64{"apns/" + tc.outcome: 1})
			if hits, _ := e.apns.stats(); hits != 1 {
				t.Errorf("APNs requests = %d, want 1 (no redirect or retry)", hits)
			}
			logs := e.logs.String()
			if !strings.Contains(logs, tc.log) || !strings.Contains(logs, "outcome="+tc.outcome) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs)
			}
			if strings.Contains(logs, "forged") {
				t.Errorf("a malformed reason reached the logs:\n%s", logs)
			}
		})
	}
}

func TestAPNsTimeout(t *testing.T) {
	e := newEnv(t)
	e.apns.hold()
	c := e.config()
	c.Timeout = 200 * time.Millisecond
	s := e.start(c)
	s.Wake("srv-1", "apns", e.apnsToken())
	settle(s)
	wantCounts(t, s, map[string]float64{"apns/failed": 1})
	if logs := e.logs.String(); !strings.Contains(logs, "cause=timeout") {
		t.Errorf("log lacks the timeout:\n%s", logs)
	}
}

// TestDedicatedTransportVerifiesTLS: without an injected transport, a
// server whose certificate is not trusted is never sent a request.
func TestDedicatedTransportVerifiesTLS(t *testing.T) {
	e := newEnv(t)
	c := e.config()
	c.Transport = nil
	// the fake APNs certificate is not in the system roots
	s := e.start(c)
	s.Wake("srv-1", "apns", e.apnsToken())
	settle(s)
	wantCounts(t, s, map[string]float64{"apns/failed": 1})
	if hits, _ := e.apns.stats(); hits != 0 {
		t.Errorf("APNs requests = %d, want 0", hits)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "cause=tls") {
		t.Errorf("log lacks cause=tls:\n%s", logs)
	}
}
