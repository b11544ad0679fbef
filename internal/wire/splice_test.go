package wire

import (
	"bytes"
	"testing"
)

var spliceFrames = []string{
	`{"v":2,"type":"noise_init","data":"AAECAwQ="}`,
	`{}`,
	`[]`,
	`null`,
	`0`,
	`"s"`,
	` { "a" : [ 1 , 2 ] } `, // whitespace kept as is inside the envelope
	`{"conn_id":"c-evil","frame":null,"close_code":4000}`,
	`"\u0000\ud800\"}"`,
	"\"héllo\"",
}

func TestAppendEnvelopeRoundTrip(t *testing.T) {
	for _, id := range []string{"c-5f1d9a03b2c47e68", "x", "A.b_c:d-9"} {
		for _, f := range spliceFrames {
			out := AppendEnvelope([]byte("prefix"), id, []byte(f))
			if !bytes.HasPrefix(out, []byte("prefix")) {
				t.Fatal("dst contents lost")
			}
			env := out[len("prefix"):]
			want := `{"conn_id":"` + id + `","frame":` + f + `}`
			if string(env) != want {
				t.Fatalf("AppendEnvelope = %s, want %s", env, want)
			}
			if !oracleValid(env) {
				t.Fatalf("envelope %s is not valid JSON", env)
			}
			got, err := ParseEnvelope(env)
			if f == "null" {
				if err != ErrNoPayload || got.Frame != nil {
					t.Fatalf("null frame: %v %q", err, got.Frame)
				}
				continue
			}
			if err != nil {
				t.Fatalf("ParseEnvelope(%s): %v", env, err)
			}
			trimmed := bytes.Trim([]byte(f), " \t\r\n")
			if string(got.ConnID) != id || !bytes.Equal(got.Frame, trimmed) || got.HasClose || got.PushWake != nil {
				t.Fatalf("round trip of %s: %+v", env, got)
			}
		}
	}
}

func TestPutSplicePrefix(t *testing.T) {
	const id = "c-5f1d9a03b2c47e68"
	frame := []byte(`{"v":2,"type":"noise_msg","data":"Zm9v"}`)
	p := SplicePrefixLen(id)
	if p != len(`{"conn_id":"c-5f1d9a03b2c47e68","frame":`) {
		t.Fatalf("SplicePrefixLen = %d", p)
	}

	// The relay's way: read the frame in place, then fill in around it.
	buf := make([]byte, p+len(frame)+1)
	copy(buf[p:], frame)
	if n := PutSplicePrefix(buf, id); n != p {
		t.Fatalf("PutSplicePrefix wrote %d bytes, want %d", n, p)
	}
	buf[len(buf)-1] = '}'
	if want := AppendEnvelope(nil, id, frame); !bytes.Equal(buf, want) {
		t.Fatalf("spliced %s, want %s", buf, want)
	}

	defer func() {
		if recover() == nil {
			t.Fatal("PutSplicePrefix into a short buffer did not panic")
		}
	}()
	PutSplicePrefix(make([]byte, p-1), id)
}

func TestAppendCloseNotice(t *testing.T) {
	cases := []struct {
		id   string
		code int
		want string
	}{
		{"c-1", 1001, `{"conn_id":"c-1","close_code":1001}`},
		{"c-5f1d9a03b2c47e68", 4401, `{"conn_id":"c-5f1d9a03b2c47e68","close_code":4401}`},
		{"c-1", 1000, `{"conn_id":"c-1","close_code":1000}`},
	}
	for _, tc := range cases {
		got := AppendCloseNotice(nil, tc.id, tc.code)
		if string(got) != tc.want {
			t.Errorf("AppendCloseNotice = %s, want %s", got, tc.want)
		}
		env, err := ParseEnvelope(got)
		if err != nil || string(env.ConnID) != tc.id || env.Frame != nil || !env.HasClose || env.CloseCode != tc.code {
			t.Errorf("close notice %s parsed as %+v, %v", got, env, err)
		}
	}
}

func TestSpliceNoAllocs(t *testing.T) {
	const id = "c-5f1d9a03b2c47e68"
	frame := []byte(realisticFrame(1024))
	dst := make([]byte, 0, 2048)
	buf := make([]byte, 2048)
	if n := testing.AllocsPerRun(50, func() { dst = AppendEnvelope(dst[:0], id, frame) }); n != 0 {
		t.Errorf("AppendEnvelope allocates %v times", n)
	}
	if n := testing.AllocsPerRun(50, func() { dst = AppendCloseNotice(dst[:0], id, 4401) }); n != 0 {
		t.Errorf("AppendCloseNotice allocates %v times", n)
	}
	if n := testing.AllocsPerRun(50, func() { PutSplicePrefix(buf, id) }); n != 0 {
		t.Errorf("PutSplicePrefix allocates %v times", n)
	}
}
