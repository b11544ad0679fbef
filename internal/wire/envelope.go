package wire

import "bytes"

// Envelope is a routing envelope received from the binary (protocol
// section 5). Its slices alias the buffer given to ParseEnvelope; nothing is
// copied on the common path, so the envelope is only valid as long as that
// buffer is. The aliased slices have their capacity capped at their length,
// so appending to one of them never writes into the buffer.
type Envelope struct {
	// ConnID is the conn_id value, unescaped. It is empty when conn_id is
	// absent, null or "".
	ConnID []byte

	// Frame is the exact bytes of the "frame" value, without surrounding
	// whitespace. It is nil when frame is absent or null.
	Frame []byte

	// HasClose reports that close_code is present and not null.
	HasClose bool

	// CloseCode is the code to close the phone with. It is always a code
	// that may appear on the wire (see WireCloseCodeAllowed) and is only
	// meaningful when HasClose is set.
	CloseCode int

	// CloseCodeReplaced reports that the binary asked for a code that may
	// not appear on the wire (or for a number that is not such an integer
	// at all), so CloseCode was set to 1011 instead.
	CloseCodeReplaced bool

	// PushWake is the raw bytes of the push_wake value when that value is
	// an object and ConnID is empty; nil otherwise. Decode it with
	// ParsePushWake.
	PushWake []byte
}

// ParseEnvelope parses an envelope sent by the binary, validating the whole
// input as JSON in the same pass (with the rules of ValidJSON). It does not
// allocate unless a key or the conn_id is written with backslash escapes.
//
// Keys are compared after unescaping. When a key appears more than once the
// last occurrence wins. Unknown keys, including the legacy "token", are
// validated and ignored. A push_wake whose value is not an object counts as
// absent.
//
// On success, either ConnID is non-empty and Frame or HasClose is set, or
// ConnID is empty and PushWake is non-nil. The errors are ErrNotJSON,
// ErrNotObject, ErrBadField, ErrNoTarget and ErrNoPayload; with the last
// three the returned Envelope still holds what was parsed, which may help
// when logging, and with the first two it is the zero value.
func ParseEnvelope(b []byte) (Envelope, error) {
	var (
		env                 Envelope
		badConnID, badClose bool
		keyBuf              [longestKnownKey]byte
		r                   = objReader{b: b}
	)
	for {
		m, st := r.next()
		if st == memberEnd {
			break
		}
		if st == memberBad {
			return Envelope{}, notJSONOrNotObject(b)
		}
		v := m.val
		switch string(keyName(m, &keyBuf)) {
		case "conn_id":
			badConnID = false
			switch v[0] {
			case '"':
				env.ConnID = stringValue(v)
			case 'n':
				env.ConnID = nil
			default:
				env.ConnID = nil
				badConnID = true
			}
		case "frame":
			if v[0] == 'n' {
				env.Frame = nil
			} else {
				env.Frame = v
			}
		case "close_code":
			badClose = false
			env.HasClose, env.CloseCode, env.CloseCodeReplaced = false, 0, false
			switch {
			case v[0] == '-' || isDigit(v[0]):
				env.HasClose = true
				env.CloseCode, env.CloseCodeReplaced = closeCodeFromNumber(v)
			case v[0] == 'n':
			default:
				badClose = true
			}
		case "push_wake":
			if v[0] == '{' {
				env.PushWake = v
			} else {
				env.PushWake = nil
			}
		}
	}
	if !r.finished() {
		return Envelope{}, ErrNotJSON
	}

	if len(env.ConnID) > 0 {
		env.PushWake = nil
	}
	switch {
	case badConnID || badClose:
		return env, ErrBadField
	case len(env.ConnID) == 0 && env.PushWake == nil:
		return env, ErrNoTarget
	case len(env.ConnID) > 0 && env.Frame == nil && !env.HasClose:
		return env, ErrNoPayload
	}
	return env, nil
}

// notJSONOrNotObject tells the two ways an envelope can fail to be a JSON
// object apart. It is only called on the failure path.
func notJSONOrNotObject(b []byte) error {
	i := skipSpace(b, 0)
	if i < len(b) && b[i] != '{' && ValidJSON(b) {
		return ErrNotObject
	}
	return ErrNotJSON
}

// stringValue returns the decoded contents of v, a valid JSON string
// including its quotes. Without escapes it aliases v; nil stands for "".
func stringValue(v []byte) []byte {
	body := v[1 : len(v)-1 : len(v)-1]
	if len(body) == 0 {
		return nil
	}
	if bytes.IndexByte(body, '\\') < 0 {
		return body
	}
	return appendUnescaped(make([]byte, 0, len(body)), body)
}

// ParsePushWake decodes a push_wake object (Envelope.PushWake). Both
// platform and token must be present as JSON strings, or ErrBadPushWake is
// returned; they may be empty, and judging their values is up to the
// caller. Other members are ignored, keys are compared after unescaping and
// the last of duplicate keys wins. Input that is not a valid JSON object
// yields ErrNotJSON or ErrNotObject.
func ParsePushWake(raw []byte) (platform, token string, err error) {
	var (
		havePlatform, haveToken bool
		keyBuf                  [longestKnownKey]byte
		r                       = objReader{b: raw}
	)
	for {
		m, st := r.next()
		if st == memberEnd {
			break
		}
		if st == memberBad {
			return "", "", notJSONOrNotObject(raw)
		}
		var dst *string
		var have *bool
		switch string(keyName(m, &keyBuf)) {
		case "platform":
			dst, have = &platform, &havePlatform
		case "token":
			dst, have = &token, &haveToken
		default:
			continue
		}
		if m.val[0] == '"' {
			*dst, *have = string(stringValue(m.val)), true
		} else {
			*dst, *have = "", false
		}
	}
	if !r.finished() {
		return "", "", ErrNotJSON
	}
	if !havePlatform || !haveToken {
		return "", "", ErrBadPushWake
	}
	return platform, token, nil
}
