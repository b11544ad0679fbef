package wire

import "errors"

// Outcomes of ParseEnvelope and ParsePushWake. Every one of them means the
// envelope is dropped and counted; none of them is fatal to the connection.
var (
	// ErrNotJSON reports input that is not exactly one valid JSON value,
	// including invalid UTF-8, nesting deeper than MaxDepth and trailing bytes.
	ErrNotJSON = errors.New("wire: not valid JSON")

	// ErrNotObject reports valid JSON whose top-level value is not an object.
	ErrNotObject = errors.New("wire: not a JSON object")

	// ErrBadField reports a conn_id that is neither a string nor null, or a
	// close_code that is neither a number nor null.
	ErrBadField = errors.New("wire: envelope field has the wrong type")

	// ErrNoTarget reports an envelope with an empty or missing conn_id and no
	// push_wake object.
	ErrNoTarget = errors.New("wire: envelope has no conn_id and no push_wake")

	// ErrNoPayload reports an envelope addressed to a phone that carries
	// neither a frame nor a close_code.
	ErrNoPayload = errors.New("wire: envelope has neither frame nor close_code")

	// ErrBadPushWake reports a push_wake object whose platform or token is
	// missing or not a JSON string.
	ErrBadPushWake = errors.New("wire: push_wake needs string platform and token")
)
