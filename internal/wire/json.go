package wire

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of arrays and objects that ValidJSON and
// ParseEnvelope accept. It equals the limit of encoding/json, so both agree
// on which documents are valid.
const MaxDepth = 10000

// Results of scanValue other than a non-negative end offset.
const (
	scanBad       = -1 // the input is not valid JSON
	scanNeedStack = -2 // the nesting outgrew the stack the caller provided
)

const (
	smallStackWords = 4                    // 256 levels: every realistic frame
	fullStackWords  = (MaxDepth + 63) / 64 // one bit per level up to MaxDepth
)

// isSpace marks the four bytes JSON treats as whitespace.
var isSpace = [256]bool{' ': true, '\t': true, '\n': true, '\r': true}

// ValidJSON reports whether b holds exactly one JSON value (RFC 8259),
// optionally surrounded by JSON whitespace, with all of b valid UTF-8 and no
// nesting deeper than MaxDepth. Lone surrogate escapes such as "\ud800" are
// accepted: they are well-formed escapes. ValidJSON never allocates.
func ValidJSON(b []byte) bool {
	end := validValue(b, 0, 0)
	return end >= 0 && skipSpace(b, end) == len(b)
}

// validValue checks the JSON value that starts at or after b[i] (leading
// whitespace is skipped) while depth containers are already open around it.
// It returns the offset just past the value, or scanBad.
func validValue(b []byte, i, depth int) int {
	var stack [smallStackWords]uint64
	end := scanValue(b, i, depth, stack[:])
	if end == scanNeedStack {
		end = validValueDeep(b, i, depth)
	}
	return end
}

// validValueDeep reruns the scan with a stack large enough for MaxDepth. It
// is a separate function so that the common case does not pay for zeroing
// the large stack.
//
//go:noinline
func validValueDeep(b []byte, i, depth int) int {
	var stack [fullStackWords]uint64
	return scanValue(b, i, depth, stack[:])
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace[b[i]] {
		i++
	}
	return i
}

// scanValue is the iterative validator behind validValue. Each open
// container owns one bit of stack: 1 for an object, 0 for an array. If more
// than len(stack)*64 containers are open at once it gives up with
// scanNeedStack so the caller can retry with a bigger stack.
func scanValue(b []byte, i, depth int, stack []uint64) int {
	n := len(b)
	d := 0 // containers opened by this call and not yet closed
	for {
		// A value is expected here.
		i = skipSpace(b, i)
		if i >= n {
			return scanBad
		}
		switch c := b[i]; c {
		case '{', '[':
			if depth+d >= MaxDepth {
				return scanBad
			}
			if d >= len(stack)*64 {
				return scanNeedStack
			}
			bit := uint64(1) << (uint(d) & 63)
			if c == '{' {
				stack[d>>6] |= bit
			} else {
				stack[d>>6] &^= bit
			}
			d++
			i = skipSpace(b, i+1)
			if i >= n {
				return scanBad
			}
			if c == '{' {
				if b[i] == '}' {
					i++
					d--
					break
				}
				if i = scanKeyColon(b, i); i < 0 {
					return scanBad
				}
				continue
			}
			if b[i] == ']' {
				i++
				d--
				break
			}
			continue
		case '"':
			if i, _ = scanString(b, i+1); i < 0 {
				return scanBad
			}
		case 't':
			if i = scanLiteral(b, i, "true"); i < 0 {
				return scanBad
			}
		case 'f':
			if i = scanLiteral(b, i, "false"); i < 0 {
				return scanBad
			}
		case 'n':
			if i = scanLiteral(b, i, "null"); i < 0 {
				return scanBad
			}
		default:
			if i = scanNumber(b, i); i < 0 {
				return scanBad
			}
		}

		// A value just ended: close containers until one wants another
		// element, or until the value we were asked for is complete.
	closing:
		for {
			if d == 0 {
				return i
			}
			i = skipSpace(b, i)
			if i >= n {
				return scanBad
			}
			top := d - 1
			inObject := stack[top>>6]&(uint64(1)<<(uint(top)&63)) != 0
			switch b[i] {
			case ',':
				i++
				if inObject {
					i = skipSpace(b, i)
					if i = scanKeyColon(b, i); i < 0 {
						return scanBad
					}
				}
				break closing
			case '}':
				if !inObject {
					return scanBad
				}
			case ']':
				if inObject {
					return scanBad
				}
			default:
				return scanBad
			}
			i++
			d--
		}
	}
}

// scanKeyColon checks an object key starting at b[i] (which must be the
// opening quote) and the colon after it, and returns the offset after the
// colon, or scanBad.
func scanKeyColon(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return scanBad
	}
	i, _ = scanString(b, i+1)
	if i < 0 {
		return scanBad
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return scanBad
	}
	return i + 1
}

func scanLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return scanBad
	}
	return i + len(lit)
}

// Constants for testing eight string bytes at once.
const (
	lanes01 = 0x0101010101010101
	lanes80 = 0x8080808080808080
)

// scanString checks a string body starting at b[i], just after the opening
// quote. It returns the offset after the closing quote (or scanBad) and
// whether the body contains any backslash escape.
//
// The next '"' and the next '\' are found with bytes.IndexByte, which the
// runtime vectorises, and the bytes before the nearer of the two need only
// the lighter check for control and non-ASCII bytes (plainRun). A string of
// base64, which is what nearly every forwarded frame carries, is therefore
// two vector searches and one word-at-a-time pass. Each search starts where
// the last hit was passed, so however many escapes or non-ASCII runes a
// string holds, no byte is searched more than once per kind.
func scanString(b []byte, i int) (int, bool) {
	escaped := false
	quote, slash := -1, -1 // absolute offsets of the next '"' and '\' (slash == quote: none before it)
	for {
		if quote < i {
			q := bytes.IndexByte(b[i:], '"')
			if q < 0 {
				return scanBad, escaped // never closed
			}
			quote, slash = i+q, -1
		}
		if slash < i {
			if s := bytes.IndexByte(b[i:quote], '\\'); s >= 0 {
				slash = i + s
			} else {
				slash = quote
			}
		}
		i += plainRun(b[i:slash])
		if i == slash {
			if slash == quote {
				return quote + 1, escaped
			}
			escaped = true
			if i = scanEscape(b, i+1); i < 0 {
				return scanBad, escaped
			}
			continue
		}
		// b[i] is a control byte or starts a multi-byte rune.
		if b[i] < 0x20 {
			return scanBad, escaped
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return scanBad, escaped
		}
		i += size
	}
}

// plainRun returns how many bytes at the start of s are printable ASCII
// (0x20 to 0x7f; s holds no '"' or '\', which its caller cut off).
func plainRun(s []byte) int {
	i := 0
	for ; len(s)-i >= 32; i += 32 {
		w := s[i : i+32 : i+32]
		a := binary.LittleEndian.Uint64(w[0:])
		b := binary.LittleEndian.Uint64(w[8:])
		c := binary.LittleEndian.Uint64(w[16:])
		d := binary.LittleEndian.Uint64(w[24:])
		if (notPlain(a) | notPlain(b) | notPlain(c) | notPlain(d)) != 0 {
			break
		}
	}
	for ; len(s)-i >= 8; i += 8 {
		if m := notPlain(binary.LittleEndian.Uint64(s[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(s) && s[i] >= 0x20 && s[i] < 0x80; i++ {
	}
	return i
}

// notPlain returns a word whose lowest set bit lies in the lowest byte of x
// that is a control byte (< 0x20) or not ASCII, and zero when there is none.
// The lowest set bit is exact: bytes below it are 0x20 to 0x7f, which
// subtracting 0x20 leaves positive and without a borrow into the next byte.
func notPlain(x uint64) uint64 { return ((x - lanes01*0x20) | x) & lanes80 }

// scanEscape checks the escape whose letter is at b[i] (just after the
// backslash) and returns the offset after it, or scanBad.
func scanEscape(b []byte, i int) int {
	if i >= len(b) {
		return scanBad
	}
	switch b[i] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return i + 1
	case 'u':
		if len(b)-i < 5 {
			return scanBad
		}
		for _, h := range b[i+1 : i+5] {
			if hexValue(h) < 0 {
				return scanBad
			}
		}
		return i + 5
	}
	return scanBad
}

func hexValue(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// scanNumber checks a number starting at b[i] against the JSON grammar
//
//	-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
//
// and returns the offset after it, or scanBad. What follows the number is
// left to the caller, so "01" fails there, on the stray "1".
func scanNumber(b []byte, i int) int {
	n := len(b)
	if i < n && b[i] == '-' {
		i++
	}
	switch {
	case i >= n:
		return scanBad
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i++
		for i < n && isDigit(b[i]) {
			i++
		}
	default:
		return scanBad
	}
	if i < n && b[i] == '.' {
		i++
		if i >= n || !isDigit(b[i]) {
			return scanBad
		}
		for i < n && isDigit(b[i]) {
			i++
		}
	}
	if i < n && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < n && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= n || !isDigit(b[i]) {
			return scanBad
		}
		for i < n && isDigit(b[i]) {
			i++
		}
	}
	return i
}
