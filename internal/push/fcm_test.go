package push

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestFCMRequest checks the exact requests the token endpoint and FCM
// receive (the fakes verify method, path, headers, body, and the
// assertion's RS256 signature, header and claims).
func TestFCMRequest(t *testing.T) {
	e := newEnv(t)
	s := e.start(e.config())
	tok := e.fcmToken()
	s.Wake("srv-1", "fcm", tok)
	settle(s)

	wantCounts(t, s, map[string]float64{"fcm/sent": 1})
	if hits, _ := e.oauth.stats(); hits != 1 {
		t.Errorf("token requests = %d, want 1", hits)
	}
	seen := e.fcmRequests()
	if len(seen) != 1 || seen[0].token != tok {
		t.Fatalf("FCM saw %d requests", len(seen))
	}
	if access := e.access(); seen[0].access != access[0] {
		t.Error("FCM request did not carry the issued access token")
	}
	if n := testutil.CollectAndCount(s.metrics.seconds); n != 2 {
		t.Errorf("push_seconds series = %d, want 2", n)
	}
	if got := histCount(t, s, "fcm"); got != 1 {
		t.Errorf("push_seconds{fcm} count = %d, want 1", got)
	}
	if got := histCount(t, s, "apns"); got != 0 {
		t.Errorf("push_seconds{apns} count = %d, want 0", got)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "token_fp="+fingerprint(tok)) {
		t.Errorf("no fingerprint in logs:\n%s", logs)
	}
}

func TestFCMProjectOverride(t *testing.T) {
	e := newEnv(t)
	e.fcmProject = "other-project"
	c := e.config()
	c.FCMProject = "other-project"
	s := e.start(c)
	s.Wake("srv-1", "fcm", e.fcmToken())
	settle(s)
	wantCounts(t, s, map[string]float64{"fcm/sent": 1})
}

func TestFCMProjectFromFlagWhenKeyHasNone(t *testing.T) {
	e := newEnv(t)
	e.fcmProject = "flag-project"
	c := e.config()
	c.FCMCredentials = serviceAccountJSON(e.tokenURL, "")
	c.FCMProject = "flag-project"
	s := e.start(c)
	s.Wake("srv-1", "fcm", e.fcmToken())
	settle(s)
	wantCounts(t, s, map[string]float64{"fcm/sent": 1})
}

// TestFCMTokenCached: one token request serves many wakes until shortly
// before the token expires (5 minutes before, for a one-hour token).
func TestFCMTokenCached(t *testing.T) {
	e := newEnv(t)
	c := e.config()
	c.Burst = 100
	s := e.start(c)
	for range 5 {
		s.Wake("srv-1", "fcm", e.fcmToken())
		settle(s)
	}
	if hits, _ := e.oauth.stats(); hits != 1 {
		t.Fatalf("token requests after 5 wakes = %d, want 1", hits)
	}
	e.clock.Advance(55*time.Minute - time.Second)
	s.Wake("srv-1", "fcm", e.fcmToken())
	settle(s)
	if hits, _ := e.oauth.stats(); hits != 1 {
		t.Fatalf("token requests at 54m59s = %d, want 1", hits)
	}
	e.clock.Advance(time.Second)
	s.Wake("srv-1", "fcm", e.fcmToken())
	settle(s)
	if hits, _ := e.oauth.stats(); hits != 2 {
		t.Fatalf("token requests at 55m = %d, want 2", hits)
	}
	seen, access := e.fcmRequests(), e.access()
	for i, r := range seen {
		want := access[0]
		if i == len(seen)-1 {
			want = access[1]
		}
		if r.access != want {
			t.Errorf("request %d carried the wrong access token", i)
		}
	}
	wantCounts(t, s, map[string]float64{"fcm/sent": 7})
}

// TestFCMShortLivedToken: a token living less than 10 minutes is replaced
// at half-life; one without expires_in is used once and not cached.
func TestFCMShortLivedToken(t *testing.T) {
	e := newEnv(t)
	e.expiresIn = 60
	c := e.config()
	c.Burst = 100
	s := e.start(c)
	wake := func() {
		s.Wake("srv-1", "fcm", e.fcmToken())
		settle(s)
	}
	wake()
	e.clock.Advance(29 * time.Second)
	wake()
	if hits, _ := e.oauth.stats(); hits != 1 {
		t.Fatalf("token requests at 29s = %d, want 1", hits)
	}
	e.clock.Advance(time.Second)
	wake()
	if hits, _ := e.oauth.stats(); hits != 2 {
		t.Fatalf("token requests at 30s = %d, want 2", hits)
	}
	e.mu.Lock()
	e.expiresIn = -1
	e.mu.Unlock()
	e.clock.Advance(time.Hour)
	wake()
	wake()
	if hits, _ := e.oauth.stats(); hits != 4 {
		t.Fatalf("token requests without expires_in = %d, want 4", hits)
	}
	wantCounts(t, s, map[string]float64{"fcm/sent": 5})
}

// TestFCMTokenSingleFlight: wakes arriving while a token request runs
// wait for it; only one token request is ever made.
func TestFCMTokenSingleFlight(t *testing.T) {
	e := newEnv(t)
	c := e.config()
	c.Burst = 100
	s := e.start(c)
	e.oauth.hold()
	const n = 10
	for range n {
		s.Wake("srv-1", "fcm", e.fcmToken())
	}
	e.oauth.waitArrivals(t, 1)
	e.oauth.release()
	settle(s)
	hits, maxActive := e.oauth.stats()
	if hits != 1 || maxActive != 1 {
		t.Errorf("token requests = %d (at most %d at once), want 1", hits, maxActive)
	}
	wantCounts(t, s, map[string]float64{"fcm/sent": n})
}

// TestFCMRefreshOneAtATime: when the cached token expires under load,
// one refresh runs while the other wakes wait.
func TestFCMRefreshOneAtATime(t *testing.T) {
	e := newEnv(t)
	c := e.config()
	c.Burst = 100
	s := e.start(c)
	s.Wake("srv-1", "fcm", e.fcmToken())
	settle(s)
	e.clock.Advance(time.Hour)
	e.oauth.hold()
	for range 8 {
		s.Wake("srv-1", "fcm", e.fcmToken())
	}
	e.oauth.waitArrivals(t, 2) // the first fetch, then the refresh
	e.oauth.release()
	settle(s)
	hits, maxActive := e.oauth.stats()
	if hits != 2 || maxActive != 1 {
		t.Errorf("token requests = %d (at most %d at once), want 2", hits, maxActive)
	}
	wantCounts(t, s, map[string]float64{"fcm/sent": 9})
}

func TestFCMErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		respond http.HandlerFunc
		outcome string
		log     string // expected in the log line
	}{
		{"401", reply(401, googleError(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")), "rejected", "status=401 reason=THIRD_PARTY_AUTH_ERROR"},
		{"403", reply(403, googleError(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH")), "rejected", "status=403 reason=SENDER_ID_MISMATCH"},
		{"400", reply(400, googleError(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")), "rejected", "status=400 reason=INVALID_ARGUMENT"},
		{"400 UNREGISTERED", reply(400, googleError(400, "INVALID_ARGUMENT", "UNREGISTERED")), "unregistered", "status=400 reason=UNREGISTERED"},
		{"404 UNREGISTERED", reply(404, googleError(404, "NOT_FOUND", "UNREGISTERED")), "unregistered", "status=404 reason=UNREGISTERED"},
		{"404 no body", reply(404, ""), "unregistered", "status=404"},
		{"429", reply(429, googleError(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")), "rejected", "status=429 reason=QUOTA_EXCEEDED"},
		{"500", reply(500, googleError(500, "INTERNAL", "INTERNAL")), "failed", "status=500 reason=INTERNAL"},
		{"503 no details", reply(503, googleError(503, "UNAVAILABLE", "")), "failed", "status=503 reason=UNAVAILABLE"},
		{"503 html", reply(503, "<html>overloaded</html>"), "failed", "status=503"},
		{"302 not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/v1/elsewhere", http.StatusFound)
		}, "failed", "status=302"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.fcm.setRespond(tc.respond)
			s := e.start(e.config())
			s.Wake("srv-1", "fcm", e.fcmToken())
			settle(s)
			wantCounts(t, s, map[string]float64{"fcm/" + tc.outcome: 1})
			if hits, _ := e.fcm.stats(); hits != 1 {
				t.Errorf("FCM requests = %d, want 1 (no redirect or retry)", hits)
			}
			if logs := e.logs.String(); !strings.Contains(logs, tc.log) || !strings.Contains(logs, "outcome="+tc.outcome) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs)
			}
			if got := histCount(t, s, "fcm"); got != 1 {
				t.Errorf("push_seconds{fcm} count = %d, want 1", got)
			}
		})
	}
}

// TestFCM401DropsAccessToken: after FCM refuses the access token, the next
// wake fetches a new one.
func TestFCM401DropsAccessToken(t *testing.T) {
	e := newEnv(t)
	s := e.start(e.config())
	e.fcm.setRespond(reply(401, googleError(401, "UNAUTHENTICATED", "")))
	s.Wake("srv-1", "fcm", e.fcmToken())
	settle(s)
	e.fcm.setRespond(nil)
	s.Wake("srv-1", "fcm", e.fcmToken())
	settle(s)
	if hits, _ := e.oauth.stats(); hits != 2 {
		t.Errorf("token requests = %d, want 2", hits)
	}
	wantCounts(t, s, map[string]float64{"fcm/rejected": 1, "fcm/sent": 1})
}

func TestFCMTimeout(t *testing.T) {
	e := newEnv(t)
	e.fcm.hold() // never released before the client gives up
	c := e.config()
	c.Timeout = 200 * time.Millisecond
	s := e.start(c)
	s.Wake("srv-1", "fcm", e.fcmToken())
	settle(s)
	wantCounts(t, s, map[string]float64{"fcm/failed": 1})
	if logs := e.logs.String(); !strings.Contains(logs, "cause=timeout") || !strings.Contains(logs, "stage=send") {
		t.Errorf("log lacks the timeout:\n%s", logs)
	}
}

// TestOAuthErrors: a failed token exchange decides the outcome, and FCM is
// never asked.
func TestOAuthErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		respond http.HandlerFunc
		outcome string
		log     string
	}{
		{"401 invalid_client", reply(401, `{"error":"invalid_client","error_description":"The OAuth client was not found."}`), "rejected", "status=401 reason=invalid_client"},
		{"400 invalid_grant", reply(400, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`), "rejected", "status=400 reason=invalid_grant"},
		{"403 google shape", reply(403, googleError(403, "PERMISSION_DENIED", "")), "rejected", "status=403 reason=PERMISSION_DENIED"},
		{"429", reply(429, `{"error":"rate_limit_exceeded"}`), "rejected", "status=429 reason=rate_limit_exceeded"},
		{"500", reply(500, `{"error":"internal_failure"}`), "failed", "status=500 reason=internal_failure"},
		{"200 not json", reply(200, `<html>`), "failed", "cause=bad_response"},
		{"200 no token", reply(200, `{"token_type":"Bearer","expires_in":3600}`), "failed", "cause=bad_response"},
		{"200 token with newline", reply(200, `{"access_token":"ya29.a\nb","expires_in":3600}`), "failed", "cause=bad_response"},
		{"200 mac token", reply(200, `{"access_token":"ya29.abc","token_type":"mac","expires_in":3600}`), "failed", "cause=bad_response"},
		{"307 not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/token2", http.StatusTemporaryRedirect)
		}, "failed", "status=307"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.oauth.setRespond(tc.respond)
			s := e.start(e.config())
			s.Wake("srv-1", "fcm", e.fcmToken())
			settle(s)
			wantCounts(t, s, map[string]float64{"fcm/" + tc.outcome: 1})
			if hits, _ := e.oauth.stats(); hits != 1 {
				t.Errorf("token requests = %d, want 1", hits)
			}
			if hits, _ := e.fcm.stats(); hits != 0 {
				t.Errorf("FCM requests = %d, want 0", hits)
			}
			if logs := e.logs.String(); !strings.Contains(logs, "stage=oauth") || !strings.Contains(logs, tc.log) {
				t.Errorf("log lacks stage=oauth and %q:\n%s", tc.log, logs)
			}
		})
	}
}

func TestOAuthTimeout(t *testing.T) {
	e := newEnv(t)
	e.oauth.hold()
	c := e.config()
	c.Timeout = 200 * time.Millisecond
	s := e.start(c)
	s.Wake("srv-1", "fcm", e.fcmToken())
	s.Wake("srv-2", "fcm", e.fcmToken()) // waits for the same fetch
	settle(s)
	wantCounts(t, s, map[string]float64{"fcm/failed": 2})
	if hits, _ := e.fcm.stats(); hits != 0 {
		t.Errorf("FCM requests = %d, want 0", hits)
	}
	if logs := e.logs.String(); strings.Count(logs, "cause=timeout") != 2 {
		t.Errorf("want two timeouts:\n%s", logs)
	}
}
