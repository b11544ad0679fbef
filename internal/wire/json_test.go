package wire

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// oracleValid is the reference ValidJSON is held to.
func oracleValid(b []byte) bool { return json.Valid(b) && utf8.Valid(b) }

var validJSONCases = []struct {
	in   string
	want bool
}{
	// Empty and whitespace.
	{"", false},
	{" ", false},
	{" \t\r\n", false},
	{" \t\r\n1 \t\r\n", true},
	{"\f1", false},
	{"1\v", false},
	{"\u00a01", false},

	// Literals.
	{"true", true},
	{"false", true},
	{"null", true},
	{"tru", false},
	{"truex", false},
	{"True", false},
	{"nul", false},
	{"nulll", false},
	{"true false", false},

	// Numbers.
	{"0", true},
	{"-0", true},
	{"-0.0", true},
	{"1", true},
	{"-1", true},
	{"123456789012345678901234567890", true},
	{"1e5", true},
	{"1E5", true},
	{"1e+5", true},
	{"1e-5", true},
	{"1.5e-005", true},
	{"0.5", true},
	{"-0e0", true},
	{"01", false},
	{"-01", false},
	{"00", false},
	{"1.", false},
	{".5", false},
	{"-", false},
	{"+1", false},
	{"1e", false},
	{"1e+", false},
	{"1.e5", false},
	{"1.5e", false},
	{"0x10", false},
	{"1_000", false},
	{"Infinity", false},
	{"NaN", false},
	{"- 1", false},
	{"1 2", false},

	// Strings and escapes.
	{`""`, true},
	{`"abc"`, true},
	{`"\"\\\/\b\f\n\r\t"`, true},
	{`"\u0000"`, true},
	{`"\uABCD\uabcd"`, true},
	{`"\ud800"`, true},
	{`"\udc00\ud800"`, true},
	{`"\ud83d\ude00"`, true},
	{`"\u12"`, false},
	{`"\u12g4"`, false},
	{`"\x41"`, false},
	{`"\a"`, false},
	{`"\'"`, false},
	{`"\`, false},
	{`"\"`, false},
	{`"abc`, false},
	{`"`, false},
	{`"a"b"`, false},
	{"\"a\x00b\"", false},
	{"\"a\x1fb\"", false},
	{"\"a\tb\"", false},
	{"\"a\nb\"", false},
	{"\"a\x7fb\"", true},
	{"\"héllo wörld €𝄞\"", true},
	{"\"\xff\"", false},
	{"\"\xc3\"", false},
	{"\"\xc3(\"", false},
	{"\"\xed\xa0\x80\"", false}, // UTF-8 encoded surrogate
	{"\"\xf4\x90\x80\x80\"", false},
	{"\"\xc0\xaf\"", false}, // overlong
	{"\"\xe2\x82\"", false},
	{"\"0123456789abcdef\xff\"", false},
	{"\"0123456789abcdef\x01\"", false},
	{`"0123456789abcdef\n0123456789abcdef"`, true},
	{"'a'", false},

	// Arrays.
	{"[]", true},
	{"[ ]", true},
	{"[1]", true},
	{"[1,2]", true},
	{" [ 1 , [ ] , { } , \"x\" ] ", true},
	{"[1,]", false},
	{"[,1]", false},
	{"[,]", false},
	{"[1 2]", false},
	{"[", false},
	{"]", false},
	{"[1", false},
	{"[1,", false},
	{"[}", false},
	{"[1}", false},
	{"[[]", false},
	{"[]]", false},

	// Objects.
	{"{}", true},
	{"{ }", true},
	{`{"a":1}`, true},
	{`{"a":1,"b":[true,false,null],"c":{"d":"e"}}`, true},
	{` { "a" : 1 , "b" : { } } `, true},
	{`{"a":1,"a":2}`, true},
	{`{"a":1,}`, false},
	{`{,"a":1}`, false},
	{`{"a"}`, false},
	{`{"a":}`, false},
	{`{"a" 1}`, false},
	{`{a:1}`, false},
	{`{1:1}`, false},
	{`{"a":1 "b":2}`, false},
	{`{"a":1]`, false},
	{`{"a":1`, false},
	{`{`, false},
	{`}`, false},
	{`{"a":{"b":1}`, false},
	{"{\"\xff\":1}", false},

	// Garbage around a value.
	{"{}x", false},
	{"{}{}", false},
	{"\x00", false},
	{"1\x00", false},
	{"\xef\xbb\xbf{}", false}, // byte order mark
	{"[1]\xff", false},
}

func TestValidJSONTable(t *testing.T) {
	for _, tc := range validJSONCases {
		if got := ValidJSON([]byte(tc.in)); got != tc.want {
			t.Errorf("ValidJSON(%q) = %v, want %v", tc.in, got, tc.want)
		}
		// The table is meant to agree with the oracle; check that too.
		if o := oracleValid([]byte(tc.in)); o != tc.want {
			t.Errorf("oracle(%q) = %v, table says %v", tc.in, o, tc.want)
		}
	}
}

func nested(open, close string, depth int, inner string) string {
	return strings.Repeat(open, depth) + inner + strings.Repeat(close, depth)
}

func mixedNesting(depth int) string {
	var sb strings.Builder
	for i := range depth {
		if i%3 == 0 {
			sb.WriteString(`{"k":`)
		} else {
			sb.WriteString("[")
		}
	}
	sb.WriteString("0")
	for i := depth - 1; i >= 0; i-- {
		if i%3 == 0 {
			sb.WriteString("}")
		} else {
			sb.WriteString("]")
		}
	}
	return sb.String()
}

func TestValidJSONDepth(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want bool
	}{
		{"arrays at 64", nested("[", "]", 64, ""), true},
		{"arrays at 256", nested("[", "]", 256, ""), true},
		{"arrays at 257", nested("[", "]", 257, ""), true},
		{"arrays at max", nested("[", "]", MaxDepth, ""), true},
		{"arrays past max", nested("[", "]", MaxDepth+1, ""), false},
		{"objects at max", nested(`{"a":`, "}", MaxDepth-1, "{}"), true},
		{"objects past max", nested(`{"a":`, "}", MaxDepth, "{}"), false},
		{"mixed at 300", mixedNesting(300), true},
		{"mixed at max", mixedNesting(MaxDepth), true},
		{"mixed past max", mixedNesting(MaxDepth + 1), false},
		{"mismatch deep", nested("[", "]", 300, "") + "]", false},
		{"wrong closer deep", nested("[", "]", 299, "{]") + "", false},
		{"unclosed deep", strings.Repeat("[", 5000), false},
		{"very deep opener run", strings.Repeat("[", 3*MaxDepth), false},
	}
	for _, tc := range cases {
		b := []byte(tc.in)
		if got := ValidJSON(b); got != tc.want {
			t.Errorf("%s: ValidJSON = %v, want %v", tc.name, got, tc.want)
		}
		if o := oracleValid(b); o != tc.want {
			t.Errorf("%s: oracle = %v, want %v", tc.name, o, tc.want)
		}
	}
}

// TestValidJSONStringStops drives every byte value through each position of
// the eight-byte fast path and compares with the oracle.
func TestValidJSONStringStops(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 20; pos++ {
			body := []byte(strings.Repeat("a", 20))
			body[pos] = byte(c)
			in := append(append([]byte{'"'}, body...), '"')
			if got, want := ValidJSON(in), oracleValid(in); got != want {
				t.Fatalf("ValidJSON(%q) = %v, oracle %v", in, got, want)
			}
		}
	}
}

func TestNotPlain(t *testing.T) {
	for c := 0; c < 256; c++ {
		special := c < 0x20 || c >= 0x80
		for pos := 0; pos < 8; pos++ {
			var w [8]byte
			for k := range w {
				w[k] = 'a'
			}
			w[pos] = byte(c)
			x := uint64(0)
			for k := 7; k >= 0; k-- {
				x = x<<8 | uint64(w[k])
			}
			m := notPlain(x)
			if !special {
				if m != 0 {
					t.Fatalf("byte %#x at %d: mask %#x, want 0", c, pos, m)
				}
				continue
			}
			if m == 0 || lowestByte(m) != pos {
				t.Fatalf("byte %#x at %d: mask %#x", c, pos, m)
			}
		}
	}
}

func lowestByte(m uint64) int {
	for k := 0; k < 8; k++ {
		if m>>(8*k)&0xff != 0 {
			return k
		}
	}
	return -1
}

func TestValidJSONNoAllocs(t *testing.T) {
	inputs := [][]byte{
		[]byte(realisticFrame(1024)),
		[]byte(nested("[", "]", 300, "")),
		[]byte(nested("[", "]", MaxDepth, "")),
		[]byte(`{"a":"\u00e9\ud83d\ude00","b":[1,2.5e3,-0,true,null]}`),
	}
	for _, in := range inputs {
		if n := testing.AllocsPerRun(20, func() { ValidJSON(in) }); n != 0 {
			t.Errorf("ValidJSON allocates %v times on %.40q", n, in)
		}
	}
}

// Long plain runs are checked 32 bytes per step: a byte that needs
// attention at any offset of a step, or just past it, must still be seen.
func TestValidJSONStopAtEveryOffset(t *testing.T) {
	stops := []string{`"`, `\`, `\n`, `\u00e9`, "\n", "\x01", "\u00e9", "\u20ac", "\xff", "\xc3", `\q`}
	for _, stop := range stops {
		for pos := 0; pos < 100; pos++ {
			body := strings.Repeat("A", pos) + stop + strings.Repeat("B", 70)
			doc := []byte(`{"data":"` + body + `"}`)
			if got, want := ValidJSON(doc), oracleValid(doc); got != want {
				t.Fatalf("stop %q at %d: ValidJSON %v, oracle %v", stop, pos, got, want)
			}
		}
	}
}

// A string with many stops (escaped quotes and backslashes, runes of every
// length, control bytes) is searched piecewise: each must be handled where
// it is, with the searches resumed after it.
func TestValidJSONManyStops(t *testing.T) {
	pieces := []string{`\"`, `\\`, `\n`, `\u00e9`, "é", "€", "😀", "\x01", "\xff", `"`, "A", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"}
	r := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		var body strings.Builder
		for range 1 + r.IntN(40) {
			body.WriteString(pieces[r.IntN(len(pieces))])
		}
		doc := []byte(`{"data":"` + body.String() + `","n":1}`)
		if got, want := ValidJSON(doc), oracleValid(doc); got != want {
			t.Fatalf("%q: ValidJSON %v, oracle %v", doc, got, want)
		}
	}
}
