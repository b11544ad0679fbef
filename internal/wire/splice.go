package wire

import "strconv"

// Every function here writes a conn_id between quotes without escaping it.
// That is only correct because the relay makes its conn_ids itself, from
// the characters [A-Za-z0-9._:-] alone, none of which needs escaping in a
// JSON string. Callers must never pass a conn_id from any other source.

const (
	envPrefixA     = `{"conn_id":"`
	envPrefixB     = `","frame":`
	closeInfix     = `","close_code":`
	envelopeSuffix = '}'
)

// SplicePrefixLen returns the length of the envelope prefix
// `{"conn_id":"<connID>","frame":` that PutSplicePrefix writes. A relay
// reads a phone's frame into buf[SplicePrefixLen(id):], fills the front
// with PutSplicePrefix and appends '}' to get an envelope without moving
// the frame's bytes.
func SplicePrefixLen(connID string) int {
	return len(envPrefixA) + len(connID) + len(envPrefixB)
}

// PutSplicePrefix writes `{"conn_id":"<connID>","frame":` at the start of
// dst and returns the number of bytes written, SplicePrefixLen(connID). It
// panics if dst is shorter than that. connID must consist of
// [A-Za-z0-9._:-] only (it is not escaped).
func PutSplicePrefix(dst []byte, connID string) int {
	_ = dst[SplicePrefixLen(connID)-1] // one bounds check up front
	n := copy(dst, envPrefixA)
	n += copy(dst[n:], connID)
	n += copy(dst[n:], envPrefixB)
	return n
}

// AppendEnvelope appends `{"conn_id":"<connID>","frame":<frame>}` to dst
// and returns the extended slice. The frame's bytes are copied unchanged,
// so frame must already be exactly one valid JSON value (see ValidJSON):
// otherwise a phone could smuggle keys into the envelope. connID must
// consist of [A-Za-z0-9._:-] only (it is not escaped).
func AppendEnvelope(dst []byte, connID string, frame []byte) []byte {
	dst = append(dst, envPrefixA...)
	dst = append(dst, connID...)
	dst = append(dst, envPrefixB...)
	dst = append(dst, frame...)
	return append(dst, envelopeSuffix)
}

// AppendCloseNotice appends the close notice
// `{"conn_id":"<connID>","close_code":<code>}` to dst and returns the
// extended slice. It has no frame key. It does not allocate when dst has
// room. connID must consist of [A-Za-z0-9._:-] only (it is not escaped).
func AppendCloseNotice(dst []byte, connID string, code int) []byte {
	dst = append(dst, envPrefixA...)
	dst = append(dst, connID...)
	dst = append(dst, closeInfix...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	return append(dst, envelopeSuffix)
}
