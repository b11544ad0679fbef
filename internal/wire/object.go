package wire

import (
	"unicode/utf16"
	"unicode/utf8"
)

// objReader walks the members of one top-level JSON object, validating
// every byte it passes over. Values are validated with validValue at depth
// 1, so the whole document obeys MaxDepth.
type objReader struct {
	b       []byte
	i       int
	started bool
}

// Results of objReader.next.
const (
	memberOK  = iota // a member was read
	memberEnd        // the closing brace was read
	memberBad        // the input is not valid JSON (or not an object)
)

// member is one key/value pair. key is the raw string body (still escaped
// when escaped is true); val is the exact bytes of the value, capped so that
// appending to it cannot overwrite the input.
type member struct {
	key     []byte
	escaped bool
	val     []byte
}

func (r *objReader) next() (member, int) {
	b := r.b
	i := skipSpace(b, r.i)
	if !r.started {
		if i >= len(b) || b[i] != '{' {
			return member{}, memberBad
		}
		r.started = true
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == '}' {
			r.i = i + 1
			return member{}, memberEnd
		}
	} else {
		if i >= len(b) {
			return member{}, memberBad
		}
		switch b[i] {
		case '}':
			r.i = i + 1
			return member{}, memberEnd
		case ',':
			i = skipSpace(b, i+1)
		default:
			return member{}, memberBad
		}
	}

	if i >= len(b) || b[i] != '"' {
		return member{}, memberBad
	}
	keyStart := i + 1
	keyEnd, escaped := scanString(b, keyStart)
	if keyEnd < 0 {
		return member{}, memberBad
	}
	i = skipSpace(b, keyEnd)
	if i >= len(b) || b[i] != ':' {
		return member{}, memberBad
	}
	valStart := skipSpace(b, i+1)
	valEnd := validValue(b, valStart, 1)
	if valEnd < 0 {
		return member{}, memberBad
	}
	r.i = valEnd
	return member{
		key:     b[keyStart : keyEnd-1 : keyEnd-1],
		escaped: escaped,
		val:     b[valStart:valEnd:valEnd],
	}, memberOK
}

// finished reports whether only whitespace follows the object.
func (r *objReader) finished() bool {
	return skipSpace(r.b, r.i) == len(r.b)
}

// longestKnownKey bounds the raw length of an escaped key that can still
// name one of the fields we look for: an escape is at most six bytes per
// decoded byte, and our names are at most ten bytes long.
const longestKnownKey = 6 * len("close_code")

// keyName returns the unescaped key of m. Unescaped keys are returned as is;
// escaped keys short enough to be one of ours are decoded into buf, which
// is large enough that no allocation happens. Longer escaped keys come back
// as nil, which matches no field.
func keyName(m member, buf *[longestKnownKey]byte) []byte {
	if !m.escaped {
		return m.key
	}
	if len(m.key) > len(buf) {
		return nil
	}
	return appendUnescaped(buf[:0], m.key)
}

// appendUnescaped appends the decoded form of s, the body of a valid JSON
// string, to dst. A \u escape that is not part of a well-formed surrogate
// pair decodes to U+FFFD, as encoding/json does. The output is never longer
// than s.
func appendUnescaped(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		switch s[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				low := rune(-1)
				if len(s)-i >= 6 && s[i] == '\\' && s[i+1] == 'u' {
					low = hex4(s[i+2:])
				}
				if pair := utf16.DecodeRune(r, low); pair != utf8.RuneError {
					r = pair
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\' and '/' stand for themselves
			dst = append(dst, s[i+1])
		}
		i += 2
	}
	return dst
}

// hex4 decodes four hex digits that the validator has already checked.
func hex4(h []byte) rune {
	return rune(hexValue(h[0])<<12 | hexValue(h[1])<<8 | hexValue(h[2])<<4 | hexValue(h[3]))
}
