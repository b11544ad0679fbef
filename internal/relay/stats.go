package relay

import "sync/atomic"

// Stats counts what the relay did. Every field is safe for concurrent use;
// the metrics exporter reads them.
type Stats struct {
	FramesToBinary atomic.Int64 // phone frames forwarded to a binary
	FramesToPhone  atomic.Int64 // binary frames queued for a phone
	BytesToBinary  atomic.Int64 // bytes of those phone frames
	BytesToPhone   atomic.Int64 // bytes of those binary frames

	DroppedMalformed   atomic.Int64 // binary envelopes that were not valid envelopes
	DroppedUnknownConn atomic.Int64 // envelopes for a conn_id the binary may not address
	DroppedBinaryOp    atomic.Int64 // binary-opcode messages from a binary
	CloseCodeReplaced  atomic.Int64 // close directives whose code was replaced by 1011
	BacklogCloses      atomic.Int64 // phones closed because their queue overflowed

	PushRequested atomic.Int64 // valid push wakes handed to the PushSink
	PushMalformed atomic.Int64 // push_wake requests with a bad platform or token
	PushDropped   atomic.Int64 // wakes dropped because no push sender is configured

	GraceReclaimed atomic.Int64 // ids reclaimed during their grace period
	GraceExpired   atomic.Int64 // ids released when the grace period ran out
	Takeovers      atomic.Int64 // ids taken from a binary that failed the conflict probe
}
