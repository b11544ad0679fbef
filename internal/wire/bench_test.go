package wire

import (
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

const benchConnID = "c-5f1d9a03b2c47e68"

// realisticFrame returns a noise_msg frame of exactly size bytes whose data
// is base64 of random bytes, like the frames the relay forwards.
func realisticFrame(size int) string {
	const head, tail = `{"v":2,"type":"noise_msg","data":"`, `"}`
	n := size - len(head) - len(tail)
	raw := make([]byte, n) // more than enough random input
	r := rand.New(rand.NewPCG(1, 2))
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	data := base64.StdEncoding.EncodeToString(raw)[:n]
	return head + data + tail
}

func BenchmarkValidJSON(b *testing.B) {
	frame := []byte(realisticFrame(1024))
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if !ValidJSON(frame) {
			b.Fatal("frame rejected")
		}
	}
}

// BenchmarkStdlibValid is the comparison point: what encoding/json plus a
// separate UTF-8 pass cost on the same frame.
func BenchmarkStdlibValid(b *testing.B) {
	frame := []byte(realisticFrame(1024))
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if !oracleValid(frame) {
			b.Fatal("frame rejected")
		}
	}
}

func BenchmarkStdlibJSONValidOnly(b *testing.B) {
	frame := []byte(realisticFrame(1024))
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if !json.Valid(frame) {
			b.Fatal("frame rejected")
		}
	}
}

func BenchmarkValidJSONSmall(b *testing.B) {
	frame := []byte(`{"v":2,"type":"noise_init","data":"AAECAwQFBgcICQoLDA0ODw=="}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if !ValidJSON(frame) {
			b.Fatal("frame rejected")
		}
	}
}

func BenchmarkParseEnvelope(b *testing.B) {
	frame := realisticFrame(1024 - SplicePrefixLen(benchConnID) - 1)
	env := AppendEnvelope(nil, benchConnID, []byte(frame))
	b.ReportAllocs()
	b.SetBytes(int64(len(env)))
	for b.Loop() {
		if _, err := ParseEnvelope(env); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendEnvelope(b *testing.B) {
	frame := []byte(realisticFrame(1024))
	dst := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		dst = AppendEnvelope(dst[:0], benchConnID, frame)
	}
}

func BenchmarkPutSplicePrefix(b *testing.B) {
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(SplicePrefixLen(benchConnID)))
	for b.Loop() {
		n := PutSplicePrefix(buf, benchConnID)
		buf[n+1024] = '}'
	}
}

func BenchmarkAppendCloseNotice(b *testing.B) {
	dst := make([]byte, 0, 128)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendCloseNotice(nil, benchConnID, 4401))))
	for b.Loop() {
		dst = AppendCloseNotice(dst[:0], benchConnID, 4401)
	}
}

// BenchmarkValidJSONText is a frame of non-ASCII text with escapes: the
// string scanner stops at every rune and resumes its searches after it.
func BenchmarkValidJSONText(b *testing.B) {
	frame := []byte(`{"v":2,"type":"note","text":"` + strings.Repeat(`Grüße, \"καλημέρα\" – 早上好\n`, 30) + `"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if !ValidJSON(frame) {
			b.Fatal("frame rejected")
		}
	}
}
