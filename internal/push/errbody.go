package push

import "encoding/json"

// Error bodies come from a remote service and end up in logs, so only
// short machine-readable codes are taken from them, and only when they
// look like codes. Nothing else from a response is ever logged.

// maxCodeLen bounds a reason code taken from a response.
const maxCodeLen = 64

// reasonCode returns s when it looks like a service reason code (letters,
// digits, '_', '.', '-'; at most maxCodeLen bytes), otherwise "".
func reasonCode(s string) string {
	if len(s) > maxCodeLen {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return ""
		}
	}
	return s
}

// parseFCMError reads a Google API error body,
// {"error":{"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}},
// and returns its status and the first FCM errorCode found in its details.
// Either may be "".
func parseFCMError(body []byte) (status, errorCode string) {
	var v struct {
		Error struct {
			Status  string `json:"status"`
			Details []struct {
				ErrorCode string `json:"errorCode"`
			} `json:"details"`
		} `json:"error"`
	}
	// Type mismatches leave the fields they did not reach empty; whatever
	// was decoded is still usable.
	_ = json.Unmarshal(body, &v)
	for _, d := range v.Error.Details {
		if c := reasonCode(d.ErrorCode); c != "" {
			errorCode = c
			break
		}
	}
	return reasonCode(v.Error.Status), errorCode
}

// parseAPNsError reads an APNs error body, {"reason":"BadDeviceToken"},
// and returns its reason, or "".
func parseAPNsError(body []byte) string {
	var v struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(body, &v)
	return reasonCode(v.Reason)
}

// parseOAuthError reads an OAuth2 token-endpoint error body,
// {"error":"invalid_grant","error_description":"..."} (RFC 6749 5.2), or a
// Google API error object in its place, and returns the code, or "".
func parseOAuthError(body []byte) string {
	var v struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil || len(v.Error) == 0 {
		return ""
	}
	var code string
	if json.Unmarshal(v.Error, &code) == nil {
		return reasonCode(code)
	}
	status, _ := parseFCMError(body)
	return status
}
