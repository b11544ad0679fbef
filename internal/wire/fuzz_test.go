package wire

import (
	"bytes"
	"strings"
	"testing"
)

// seedInputs feeds every table of the unit tests into the fuzzers.
func seedInputs() []string {
	var s []string
	for _, tc := range validJSONCases {
		s = append(s, tc.in)
	}
	for _, tc := range envelopeCases {
		if len(tc.in) < 1000 { // leave the huge nesting cases out
			s = append(s, tc.in)
		}
	}
	return append(s,
		realisticFrame(300),
		nested("[", "]", 300, ""),
		mixedNesting(70),
		`{"conn_id":"c-1","frame":{"a":[1,{"b":"\ud83d\ude00"}]},"close_code":4.4e3}`,
		"{\"push_wake\":{\"platform\":\"fcm\",\"token\":\"é\"},\"conn_id\":\"\"}",
	)
}

// FuzzValidJSON holds ValidJSON to encoding/json plus a UTF-8 check.
func FuzzValidJSON(f *testing.F) {
	for _, s := range seedInputs() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := ValidJSON(b), oracleValid(b); got != want {
			t.Fatalf("ValidJSON(%q) = %v, oracle %v", b, got, want)
		}
	})
}

// FuzzParseEnvelope checks that ParseEnvelope never panics, agrees with the
// oracle about validity, and hands out a Frame that is valid JSON cut
// straight out of the input.
func FuzzParseEnvelope(f *testing.F) {
	for _, s := range seedInputs() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		env, err := ParseEnvelope(b)
		if !bytes.Equal(b, orig) {
			t.Fatal("ParseEnvelope modified its input")
		}
		valid := oracleValid(b)
		if (err == ErrNotJSON) == valid {
			t.Fatalf("ParseEnvelope(%q) err = %v, oracle valid = %v", b, err, valid)
		}
		if err != nil {
			return
		}
		if env.Frame != nil {
			if !ValidJSON(env.Frame) || !isSubslice(b, env.Frame) {
				t.Fatalf("Frame %q is not valid JSON cut from %q", env.Frame, b)
			}
		}
		if env.PushWake != nil && (!isSubslice(b, env.PushWake) || env.PushWake[0] != '{') {
			t.Fatalf("PushWake %q is not an object cut from %q", env.PushWake, b)
		}
		switch {
		case len(env.ConnID) > 0:
			if env.PushWake != nil || (env.Frame == nil && !env.HasClose) {
				t.Fatalf("bad phone envelope %+v from %q", env, b)
			}
			if env.HasClose && !WireCloseCodeAllowed(env.CloseCode) {
				t.Fatalf("CloseCode %d not allowed on the wire", env.CloseCode)
			}
		case env.PushWake == nil:
			t.Fatalf("success without a target: %+v from %q", env, b)
		default:
			ParsePushWake(env.PushWake) // must not panic
		}
	})
}

// FuzzSplice checks that any valid frame survives the envelope byte for
// byte, for any conn_id the relay could make.
func FuzzSplice(f *testing.F) {
	for _, s := range seedInputs() {
		f.Add("c-5f1d9a03b2c47e68", []byte(s))
	}
	f.Add("a.b_c:d-E", []byte(`{"conn_id":"x"}`))
	f.Fuzz(func(t *testing.T, id string, frame []byte) {
		if !relayConnID(id) || !ValidJSON(frame) {
			t.Skip()
		}
		trimmed := bytes.Trim(frame, " \t\r\n")
		out := AppendEnvelope(nil, id, frame)

		buf := make([]byte, SplicePrefixLen(id)+len(frame)+1)
		copy(buf[SplicePrefixLen(id):], frame)
		PutSplicePrefix(buf, id)
		buf[len(buf)-1] = '}'
		if !bytes.Equal(buf, out) {
			t.Fatalf("spliced %q, appended %q", buf, out)
		}

		env, err := ParseEnvelope(out)
		if string(trimmed) == "null" {
			if err != ErrNoPayload {
				t.Fatalf("null frame: err = %v", err)
			}
			return
		}
		if err != nil || string(env.ConnID) != id || !bytes.Equal(env.Frame, trimmed) ||
			env.HasClose || env.PushWake != nil {
			t.Fatalf("round trip of %q: %+v, %v", out, env, err)
		}
	})
}

// relayConnID reports whether id could have been made by the relay.
func relayConnID(id string) bool {
	return id != "" && strings.Trim(id,
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") == ""
}

// isSubslice reports whether sub shares memory with b at some offset.
func isSubslice(b, sub []byte) bool {
	if len(sub) == 0 {
		return false
	}
	for k := 0; k+len(sub) <= len(b); k++ {
		if &b[k] == &sub[0] {
			return bytes.Equal(b[k:k+len(sub)], sub)
		}
	}
	return false
}
