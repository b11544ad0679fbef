package push

import "testing"

// FuzzErrorBodies feeds arbitrary response bodies to the three error
// parsers: they must never panic, and whatever they return must be a
// short plain code (safe to log) or empty.
func FuzzErrorBodies(f *testing.F) {
	for _, seed := range []string{
		googleError(404, "NOT_FOUND", "UNREGISTERED"),
		googleError(503, "UNAVAILABLE", ""),
		`{"error":{"status":5,"details":"x"}}`,
		`{"error":{"details":[null,{"errorCode":7},{"errorCode":"QUOTA_EXCEEDED"}]}}`,
		`{"reason":"BadDeviceToken"}`,
		`{"reason":"Unregistered","timestamp":1700000000000}`,
		`{"reason":"a\nb"}`,
		`{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`,
		`{"error":null}`,
		`{"error":["x"]}`,
		`[]`, `null`, `"x"`, ``, `{`, `<html>`, "\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		status, code := parseFCMError(body)
		reason := parseAPNsError(body)
		oauth := parseOAuthError(body)
		for _, s := range []string{status, code, reason, oauth} {
			if reasonCode(s) != s {
				t.Fatalf("parser returned %q, not a plain code", s)
			}
		}
	})
}

func TestErrorParsers(t *testing.T) {
	if s, c := parseFCMError([]byte(googleError(404, "NOT_FOUND", "UNREGISTERED"))); s != "NOT_FOUND" || c != "UNREGISTERED" {
		t.Errorf("FCM: %q %q", s, c)
	}
	if r := parseAPNsError([]byte(`{"reason":"BadDeviceToken"}`)); r != "BadDeviceToken" {
		t.Errorf("APNs: %q", r)
	}
	if r := parseOAuthError([]byte(`{"error":"invalid_grant","error_description":"x"}`)); r != "invalid_grant" {
		t.Errorf("OAuth: %q", r)
	}
	if r := parseOAuthError([]byte(googleError(403, "PERMISSION_DENIED", ""))); r != "PERMISSION_DENIED" {
		t.Errorf("OAuth, Google shape: %q", r)
	}
	if r := parseAPNsError([]byte(`{"reason":"` + string(make([]byte, 100)) + `"}`)); r != "" {
		t.Errorf("APNs long reason: %q", r)
	}
}

func TestFingerprint(t *testing.T) {
	// SHA-256("abc") = ba7816bf...
	if fp := fingerprint("abc"); fp != "ba7816bf" {
		t.Errorf("fingerprint = %q", fp)
	}
}
