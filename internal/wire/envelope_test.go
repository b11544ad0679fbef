package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const noValue = "<nil>" // marks a nil slice in the tables below

type envWant struct {
	err      error
	connID   string
	frame    string // noValue for nil
	hasClose bool
	code     int
	replaced bool
	pushWake string // noValue for nil
}

var envelopeCases = []struct {
	name string
	in   string
	want envWant
}{
	// The examples of section 5, verbatim.
	{"spec phone to binary",
		`{"conn_id":"c-5f1d9a03b2c47e68","frame":{"v":2,"type":"noise_init","data":"..."}}`,
		envWant{connID: "c-5f1d9a03b2c47e68", frame: `{"v":2,"type":"noise_init","data":"..."}`, pushWake: noValue}},
	{"spec binary to phone",
		`{"conn_id":"c-5f1d9a03b2c47e68","frame":{"v":2,"type":"noise_resp","data":"..."}}`,
		envWant{connID: "c-5f1d9a03b2c47e68", frame: `{"v":2,"type":"noise_resp","data":"..."}`, pushWake: noValue}},
	{"spec close directive with frame",
		`{"conn_id":"c-...","frame":{"v":2,"type":"noise_msg","data":"..."},"close_code":4401}`,
		envWant{connID: "c-...", frame: `{"v":2,"type":"noise_msg","data":"..."}`, hasClose: true, code: 4401, pushWake: noValue}},
	{"spec close directive null frame",
		`{"conn_id":"c-...","frame":null,"close_code":4421}`,
		envWant{connID: "c-...", frame: noValue, hasClose: true, code: 4421, pushWake: noValue}},
	{"spec close notice",
		`{"conn_id":"c-...","close_code":1001}`,
		envWant{connID: "c-...", frame: noValue, hasClose: true, code: 1001, pushWake: noValue}},
	{"spec push wake",
		`{"push_wake":{"platform":"fcm","token":"<FCM registration token>"}}`,
		envWant{frame: noValue, pushWake: `{"platform":"fcm","token":"<FCM registration token>"}`}},

	// Frame.
	{"frame is a string", `{"conn_id":"c-1","frame":"hi"}`,
		envWant{connID: "c-1", frame: `"hi"`, pushWake: noValue}},
	{"frame is a number", `{"conn_id":"c-1","frame":-1.5e3}`,
		envWant{connID: "c-1", frame: `-1.5e3`, pushWake: noValue}},
	{"frame is false", `{"conn_id":"c-1","frame":false}`,
		envWant{connID: "c-1", frame: `false`, pushWake: noValue}},
	{"frame is an empty array", `{"conn_id":"c-1","frame":[]}`,
		envWant{connID: "c-1", frame: `[]`, pushWake: noValue}},
	{"frame trimmed of whitespace", "{ \"conn_id\" : \"c-1\" , \"frame\" :\n [ 1 , 2 ] \t}",
		envWant{connID: "c-1", frame: `[ 1 , 2 ]`, pushWake: noValue}},
	{"frame null only", `{"conn_id":"c-1","frame":null}`,
		envWant{err: ErrNoPayload, connID: "c-1", frame: noValue, pushWake: noValue}},
	{"frame absent", `{"conn_id":"c-1"}`,
		envWant{err: ErrNoPayload, connID: "c-1", frame: noValue, pushWake: noValue}},

	// close_code.
	{"close 1000", `{"conn_id":"c-1","close_code":1000}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 1000, pushWake: noValue}},
	{"close 4999", `{"conn_id":"c-1","close_code":4999}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 4999, pushWake: noValue}},
	{"close 1005 replaced", `{"conn_id":"c-1","close_code":1005}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 1011, replaced: true, pushWake: noValue}},
	{"close 999 replaced", `{"conn_id":"c-1","close_code":999}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 1011, replaced: true, pushWake: noValue}},
	{"close 5000 replaced", `{"conn_id":"c-1","close_code":5000}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 1011, replaced: true, pushWake: noValue}},
	{"close 1016 replaced", `{"conn_id":"c-1","close_code":1016}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 1011, replaced: true, pushWake: noValue}},
	{"close 1015 replaced", `{"conn_id":"c-1","close_code":1015}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 1011, replaced: true, pushWake: noValue}},
	{"close fraction replaced", `{"conn_id":"c-1","close_code":4401.5}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 1011, replaced: true, pushWake: noValue}},
	{"close negative replaced", `{"conn_id":"c-1","close_code":-4401}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 1011, replaced: true, pushWake: noValue}},
	{"close huge replaced", `{"conn_id":"c-1","close_code":1e400}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 1011, replaced: true, pushWake: noValue}},
	{"close integral float", `{"conn_id":"c-1","close_code":4401.0}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 4401, pushWake: noValue}},
	{"close exponent form", `{"conn_id":"c-1","close_code":4.401e3}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 4401, pushWake: noValue}},
	{"close as string", `{"conn_id":"c-1","close_code":"4401"}`,
		envWant{err: ErrBadField, connID: "c-1", frame: noValue, pushWake: noValue}},
	{"close as bool", `{"conn_id":"c-1","frame":1,"close_code":true}`,
		envWant{err: ErrBadField, connID: "c-1", frame: "1", pushWake: noValue}},
	{"close null with frame", `{"conn_id":"c-1","frame":{},"close_code":null}`,
		envWant{connID: "c-1", frame: "{}", pushWake: noValue}},
	{"close null alone", `{"conn_id":"c-1","close_code":null}`,
		envWant{err: ErrNoPayload, connID: "c-1", frame: noValue, pushWake: noValue}},

	// conn_id.
	{"conn_id number", `{"conn_id":5,"frame":{}}`,
		envWant{err: ErrBadField, frame: "{}", pushWake: noValue}},
	{"conn_id object", `{"conn_id":{},"frame":{}}`,
		envWant{err: ErrBadField, frame: "{}", pushWake: noValue}},
	{"conn_id empty", `{"conn_id":"","frame":{}}`,
		envWant{err: ErrNoTarget, frame: "{}", pushWake: noValue}},
	{"conn_id null", `{"conn_id":null,"frame":{}}`,
		envWant{err: ErrNoTarget, frame: "{}", pushWake: noValue}},
	{"conn_id escaped", `{"conn_id":"c-\u0031\/x","frame":1}`,
		envWant{connID: "c-1/x", frame: "1", pushWake: noValue}},
	{"no fields", `{}`,
		envWant{err: ErrNoTarget, frame: noValue, pushWake: noValue}},

	// push_wake.
	{"push_wake with conn_id ignored", `{"conn_id":"c-1","frame":2,"push_wake":{"platform":"fcm","token":"t"}}`,
		envWant{connID: "c-1", frame: "2", pushWake: noValue}},
	{"push_wake alone on a phone", `{"conn_id":"c-1","push_wake":{"platform":"fcm","token":"t"}}`,
		envWant{err: ErrNoPayload, connID: "c-1", frame: noValue, pushWake: noValue}},
	{"push_wake with empty conn_id", `{"conn_id":"","push_wake":{}}`,
		envWant{frame: noValue, pushWake: `{}`}},
	{"push_wake not an object", `{"push_wake":"fcm"}`,
		envWant{err: ErrNoTarget, frame: noValue, pushWake: noValue}},
	{"push_wake array", `{"push_wake":[{"platform":"fcm"}]}`,
		envWant{err: ErrNoTarget, frame: noValue, pushWake: noValue}},
	{"push_wake null", `{"push_wake":null}`,
		envWant{err: ErrNoTarget, frame: noValue, pushWake: noValue}},

	// Unknown keys, legacy token, key matching.
	{"unknown and token ignored", `{"x":[1,{"y":null}],"token":"secret","conn_id":"c-1","frame":{},"Conn_id":5}`,
		envWant{connID: "c-1", frame: "{}", pushWake: noValue}},
	{"keys are case sensitive", `{"CONN_ID":"c-1","Frame":{}}`,
		envWant{err: ErrNoTarget, frame: noValue, pushWake: noValue}},
	{"escaped keys", `{"conn\u005fid":"c-1","\u0066rame":[],"close\u005Fcode":4000}`,
		envWant{connID: "c-1", frame: "[]", hasClose: true, code: 4000, pushWake: noValue}},
	{"escaped solidus key is not ours", `{"conn\/id":"c-1","frame":[]}`,
		envWant{err: ErrNoTarget, frame: "[]", pushWake: noValue}},
	{"long escaped key", `{"` + strings.Repeat(`\u0061`, 40) + `":1,"conn_id":"c-1","frame":0}`,
		envWant{connID: "c-1", frame: "0", pushWake: noValue}},
	{"key with trailing space", `{"conn_id ":"c-1","frame":0}`,
		envWant{err: ErrNoTarget, frame: "0", pushWake: noValue}},

	// Duplicates: the last one wins.
	{"duplicate conn_id", `{"conn_id":"c-1","conn_id":"c-2","frame":0}`,
		envWant{connID: "c-2", frame: "0", pushWake: noValue}},
	{"duplicate frame then null", `{"conn_id":"c-1","frame":{},"frame":null,"close_code":1000}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 1000, pushWake: noValue}},
	{"duplicate close then null", `{"conn_id":"c-1","close_code":4000,"close_code":null}`,
		envWant{err: ErrNoPayload, connID: "c-1", frame: noValue, pushWake: noValue}},
	{"duplicate replaced then fine", `{"conn_id":"c-1","close_code":1,"close_code":4000}`,
		envWant{connID: "c-1", frame: noValue, hasClose: true, code: 4000, pushWake: noValue}},
	{"bad conn_id then good", `{"conn_id":1,"conn_id":"c-1","frame":0}`,
		envWant{connID: "c-1", frame: "0", pushWake: noValue}},
	{"good conn_id then bad", `{"conn_id":"c-1","conn_id":[],"frame":0}`,
		envWant{err: ErrBadField, frame: "0", pushWake: noValue}},
	{"escaped duplicate wins", `{"conn_id":"c-1","conn\u005fid":"c-2","frame":0}`,
		envWant{connID: "c-2", frame: "0", pushWake: noValue}},
	{"push_wake then non-object", `{"push_wake":{},"push_wake":1}`,
		envWant{err: ErrNoTarget, frame: noValue, pushWake: noValue}},

	// Not an object / not JSON.
	{"array", `[{"conn_id":"c-1","frame":0}]`, envWant{err: ErrNotObject, frame: noValue, pushWake: noValue}},
	{"string", `"conn_id"`, envWant{err: ErrNotObject, frame: noValue, pushWake: noValue}},
	{"number", ` 4401 `, envWant{err: ErrNotObject, frame: noValue, pushWake: noValue}},
	{"null", `null`, envWant{err: ErrNotObject, frame: noValue, pushWake: noValue}},
	{"empty", ``, envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"blank", "  \n", envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"broken array", `[1,`, envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"unterminated", `{"conn_id":"c-1","frame":0`, envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"trailing comma", `{"conn_id":"c-1","frame":0,}`, envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"trailing garbage", `{"conn_id":"c-1","frame":0}x`, envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"two objects", `{"conn_id":"c-1","frame":0}{}`, envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"bad frame", `{"conn_id":"c-1","frame":01}`, envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"invalid UTF-8 in frame", "{\"conn_id\":\"c-1\",\"frame\":\"\xff\"}", envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"invalid UTF-8 in unknown", "{\"conn_id\":\"c-1\",\"frame\":0,\"x\":[\"\xc3\"]}", envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"invalid UTF-8 in key", "{\"\xfe\":0,\"conn_id\":\"c-1\",\"frame\":0}", envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"invalid UTF-8 after", "{\"conn_id\":\"c-1\",\"frame\":0}\xff", envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"control char in conn_id", "{\"conn_id\":\"c-\x01\",\"frame\":0}", envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"too deep frame", `{"conn_id":"c-1","frame":` + nested("[", "]", MaxDepth, "") + `}`,
		envWant{err: ErrNotJSON, frame: noValue, pushWake: noValue}},
	{"deepest frame", `{"conn_id":"c-1","frame":` + nested("[", "]", MaxDepth-1, "") + `}`,
		envWant{connID: "c-1", frame: nested("[", "]", MaxDepth-1, ""), pushWake: noValue}},
}

func TestParseEnvelope(t *testing.T) {
	for _, tc := range envelopeCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			env, err := ParseEnvelope(in)
			w := tc.want
			if !errors.Is(err, w.err) {
				t.Fatalf("err = %v, want %v", err, w.err)
			}
			// The verdict on validity must match the oracle's.
			if (err == ErrNotJSON) == oracleValid(in) {
				t.Errorf("err = %v but oracle validity = %v", err, oracleValid(in))
			}
			if string(env.ConnID) != w.connID {
				t.Errorf("ConnID = %q, want %q", env.ConnID, w.connID)
			}
			checkSlice(t, "Frame", env.Frame, w.frame)
			checkSlice(t, "PushWake", env.PushWake, w.pushWake)
			if env.HasClose != w.hasClose || env.CloseCode != w.code || env.CloseCodeReplaced != w.replaced {
				t.Errorf("close = (%v, %d, %v), want (%v, %d, %v)",
					env.HasClose, env.CloseCode, env.CloseCodeReplaced, w.hasClose, w.code, w.replaced)
			}
		})
	}
}

func checkSlice(t *testing.T, name string, got []byte, want string) {
	t.Helper()
	if want == noValue {
		if got != nil {
			t.Errorf("%s = %q, want nil", name, got)
		}
		return
	}
	if got == nil || string(got) != want {
		t.Errorf("%s = %q, want %q", name, got, want)
	}
	if cap(got) != len(got) {
		t.Errorf("%s has spare capacity %d", name, cap(got)-len(got))
	}
}

func TestParseEnvelopeAliasesInput(t *testing.T) {
	in := []byte(`{"conn_id":"c-1","frame":{"a":1}}`)
	env, err := ParseEnvelope(in)
	if err != nil {
		t.Fatal(err)
	}
	if &env.Frame[0] != &in[25] || &env.ConnID[0] != &in[12] {
		t.Fatal("Frame or ConnID does not alias the input")
	}
	_ = append(env.Frame, 'X') // must not touch the input
	if in[len(in)-1] != '}' {
		t.Fatal("appending to Frame overwrote the input")
	}
}

func TestParseEnvelopeNoAllocs(t *testing.T) {
	inputs := []string{
		`{"conn_id":"c-5f1d9a03b2c47e68","frame":{"v":2,"type":"noise_msg","data":"AAAA"}}`,
		`{"conn_id":"c-1","frame":null,"close_code":4421}`,
		`{"conn_id":"c-1","close_code":4401.0}`,
		`{"conn_id":"c-1","close_code":1e400}`,
		`{"push_wake":{"platform":"fcm","token":"x"},"token":"legacy"}`,
		`{"conn\u005fid":"c-1","fr\u0061me":0}`,
		`["not","an","object"]`,
		`{"broken":`,
	}
	for _, s := range inputs {
		in := []byte(s)
		if n := testing.AllocsPerRun(20, func() { ParseEnvelope(in) }); n != 0 {
			t.Errorf("ParseEnvelope(%s) allocates %v times", s, n)
		}
	}
}

func TestParsePushWake(t *testing.T) {
	cases := []struct {
		in              string
		platform, token string
		err             error
	}{
		{`{"platform":"fcm","token":"abc"}`, "fcm", "abc", nil},
		{` { "token" : "abc" , "platform" : "apns" , "extra" : [1] } `, "apns", "abc", nil},
		{`{"platform":"","token":""}`, "", "", nil},
		{`{"platform":"f\u0063m","tok\u0065n":"a\/b\n"}`, "fcm", "a/b\n", nil},
		{`{"platform":"fcm","token":"\ud83d\ude00\ud800x"}`, "fcm", "\U0001F600\uFFFDx", nil},
		{`{"platform":"gcm","platform":"fcm","token":"t"}`, "fcm", "t", nil},
		{`{"platform":"fcm"}`, "", "", ErrBadPushWake},
		{`{"token":"t"}`, "", "", ErrBadPushWake},
		{`{"platform":1,"token":"t"}`, "", "", ErrBadPushWake},
		{`{"platform":"fcm","token":null}`, "", "", ErrBadPushWake},
		{`{"platform":"fcm","token":"t","token":{}}`, "", "", ErrBadPushWake},
		{`{"Platform":"fcm","Token":"t"}`, "", "", ErrBadPushWake},
		{`{}`, "", "", ErrBadPushWake},
		{`[]`, "", "", ErrNotObject},
		{`{"platform":"fcm","token":"t"`, "", "", ErrNotJSON},
		{"{\"platform\":\"fcm\",\"token\":\"\xff\"}", "", "", ErrNotJSON},
		{``, "", "", ErrNotJSON},
	}
	for _, tc := range cases {
		p, tok, err := ParsePushWake([]byte(tc.in))
		if p != tc.platform || tok != tc.token || !errors.Is(err, tc.err) {
			t.Errorf("ParsePushWake(%s) = (%q, %q, %v), want (%q, %q, %v)",
				tc.in, p, tok, err, tc.platform, tc.token, tc.err)
		}
	}

	// The value ParseEnvelope hands over decodes as expected.
	env, err := ParseEnvelope([]byte(`{"push_wake":{"platform":"fcm","token":"tok"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p, tok, err := ParsePushWake(env.PushWake); p != "fcm" || tok != "tok" || err != nil {
		t.Fatalf("round trip: (%q, %q, %v)", p, tok, err)
	}
}

func TestCloseCodeFromNumber(t *testing.T) {
	cases := []struct {
		num      string
		code     int
		replaced bool
	}{
		{"1000", 1000, false},
		{"1003", 1003, false},
		{"1007", 1007, false},
		{"1014", 1014, false},
		{"3000", 3000, false},
		{"4401", 4401, false},
		{"4999", 4999, false},
		{"4401.0", 4401, false},
		{"4401.000", 4401, false},
		{"4.401e3", 4401, false},
		{"4.401E+3", 4401, false},
		{"44010e-1", 4401, false},
		{"10000e-1", 1000, false},
		{"0.1e4", 1000, false},
		{"0.00001e8", 1000, false},
		{"1e3", 1000, false},
		{"440100000000000000000000e-20", 4401, false},
		{"0", 1011, true},
		{"-0", 1011, true},
		{"0.0e5", 1011, true},
		{"-1000", 1011, true},
		{"999", 1011, true},
		{"1004", 1011, true},
		{"1005", 1011, true},
		{"1006", 1011, true},
		{"1015", 1011, true},
		{"1016", 1011, true},
		{"2999", 1011, true},
		{"5000", 1011, true},
		{"65535", 1011, true},
		{"44010", 1011, true},
		{"99999999999999999999999", 1011, true},
		{"4401.5", 1011, true},
		{"4401.0000000000000001", 1011, true},
		{"4.4015e3", 1011, true},
		{"1e4", 1011, true},
		{"1e999999999999999999999", 1011, true},
		{"1e-999999999999999999999", 1011, true},
	}
	for _, tc := range cases {
		code, replaced := closeCodeFromNumber([]byte(tc.num))
		if code != tc.code || replaced != tc.replaced {
			t.Errorf("closeCodeFromNumber(%s) = (%d, %v), want (%d, %v)", tc.num, code, replaced, tc.code, tc.replaced)
		}
	}
}

func TestWireCloseCodeAllowed(t *testing.T) {
	for code := -2; code <= 70000; code++ {
		want := (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)
		if got := WireCloseCodeAllowed(code); got != want {
			t.Fatalf("WireCloseCodeAllowed(%d) = %v", code, got)
		}
	}
}

func TestCloseTable(t *testing.T) {
	all := []Close{
		CloseNormal, CloseShuttingDown, CloseGoingAway, CloseProtocol, CloseBinaryOpcode,
		CloseInvalidJSON, CloseInvalidUTF8, CloseTooBig, CloseHeartbeat, CloseBacklog, CloseMessageTimeout, CloseWriteTimeout,
		CloseNoServer, CloseReclaimed, CloseClaimed, CloseTooManyPhones, CloseTryAgain, CloseNodeLost,
	}
	for _, c := range all {
		if !WireCloseCodeAllowed(c.Code) {
			t.Errorf("%+v uses a code not allowed on the wire", c)
		}
		if len(c.Reason) > 123 { // a close frame's payload is at most 125 bytes
			t.Errorf("%+v: reason too long", c)
		}
	}
	if CloseReclaimed != (Close{4404, "binary reclaimed server-id"}) || CloseTooManyPhones.Code != 4429 {
		t.Error("close table drifted from the spec")
	}
}

func TestValidServerID(t *testing.T) {
	cases := []struct {
		in   string
		want bool
	}{
		{"a", true},
		{"Z", true},
		{"7", true},
		{"0b8f6a52-3c1e-4e2a-9d55-6f0e7c1a2b3d", true},
		{"a.b_c:d-e", true},
		{"a" + strings.Repeat("-", 127), true},
		{"a" + strings.Repeat("-", 128), false},
		{"", false},
		{"-a", false},
		{".a", false},
		{"_a", false},
		{":a", false},
		{"a b", false},
		{"a/b", false},
		{"a\n", false},
		{"é", false},
		{"aé", false},
		{"a\x00", false},
	}
	for _, tc := range cases {
		if got := ValidServerID(tc.in); got != tc.want {
			t.Errorf("ValidServerID(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// Make sure a frame that is byte-identical but whose input holds escapes
// elsewhere still comes back verbatim.
func TestParseEnvelopeFrameVerbatim(t *testing.T) {
	frame := `{"data":"\u0041\"\\","x":[1e5,-0.0,"é"]}`
	in := []byte(`{"frame":` + frame + `,"conn\u005fid":"c-9"}`)
	env, err := ParseEnvelope(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env.Frame, []byte(frame)) || string(env.ConnID) != "c-9" {
		t.Fatalf("got %q / %q", env.Frame, env.ConnID)
	}
}
