package wire

// Header names of the protocol (section 2). HTTP treats header names
// case-insensitively; these are the canonical spellings.
const (
	// HeaderServer carries the server-id a binary claims or a phone wants.
	HeaderServer = "X-Pyrycode-Server"
	// HeaderVersion carries the binary's version, e.g. "0.11.0".
	HeaderVersion = "X-Pyrycode-Version"
	// HeaderToken carries a phone's opaque device token.
	HeaderToken = "X-Pyrycode-Token"
	// HeaderDeviceName optionally carries a phone's device name.
	HeaderDeviceName = "X-Pyrycode-Device-Name"
)

// maxServerIDLen is the longest server-id accepted: one leading character
// plus up to 127 more.
const maxServerIDLen = 128

// ValidServerID reports whether s is an acceptable server-id, that is,
// whether it matches ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$.
func ValidServerID(s string) bool {
	if len(s) == 0 || len(s) > maxServerIDLen || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case isAlnum(c), c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
