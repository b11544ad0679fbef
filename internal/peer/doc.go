// Package peer implements one WebSocket connection of the relay: the RFC 6455
// server side, a single reader, a single on-demand writer with a byte-budgeted
// queue, heartbeats, deadlines and a close that happens exactly once.
//
// # Why a codec of our own
//
// The relay's cost is dominated by idle connections and by the copies and
// wake-ups of every forwarded frame. The codec here is shaped around that:
//
//   - An idle connection holds no buffer and no writer goroutine: the reader
//     blocks on a 32-byte array inside the Conn, takes a pooled chunk only
//     when bytes arrive and gives it back when the chunk is drained. The writer
//     goroutine exists only while the queue is non-empty.
//   - Each data message is unmasked straight into a pooled buffer that leaves
//     Headroom bytes in front, so the router can splice a routing envelope
//     around a phone frame without copying it again.
//   - The writer flushes everything queued in one vectored write (writev on
//     TCP), so a burst of frames costs one system call.
//
// # Two ways to serve a connection
//
// With a reader goroutine (Run), as described below; or, for a TCP
// connection made with Options.Loops on Linux (plain, or TLS accepted
// through NewTLSListener: crypto/tls stays, fed by the loop, see
// tlsloop_linux.go), on an event loop (Start, loop_linux.go): the socket
// leaves the Go poller, the loop parses input
// from its shared buffer with frameReader (stream.go), runs the handler,
// and fires the connection's heartbeat, message deadline, close wait and
// write deadline from its timer heap. An idle connection on a loop owns no
// goroutine, no stack and no buffer. Everything below holds for both,
// with the loop in the reader's place; a handler on a loop must never
// block (Park hands a message to a goroutine and stops reading meanwhile).
// Timers keep the goroutine path's meaning: the write deadline is per
// write (a batch of at most maxBatch frames and about writeChunk bytes),
// the message deadline per message, the heartbeat interval the ping
// period.
//
// # Concurrency
//
// Run is the reader and owns the connection's life: when it returns, the
// socket is closed and the queue released. Send, SendWait, Close and Probe
// may be called from any goroutine. Conn.mu guards the queue and the close
// state; no I/O happens while it is held (setting a deadline is not I/O).
//
// # Closing
//
// The first cause wins and is recorded (CloseInfo). A close requested by the
// relay queues a close frame (after the queued data, or instead of it); once
// the writer has sent it the reader waits at most CloseWait for the peer's
// answer, then the socket is closed. A close frame from the peer is answered
// and ends the connection. Read and write errors close the socket at once.
//
// A read-side violation (bad framing, an oversized or late message, a
// malformed close frame) fails the connection: its close frame goes out
// instead of any queued data, and the reader discards what follows, still
// parsing frame headers but skipping their payloads (one chunk, no payload
// kept), until the peer's close frame arrives. As RFC 6455 §7.1.1 asks of a
// server, the socket is then closed as soon as our close frame is written.
// A peer that never answers, or a stream that can no longer be parsed,
// ends when the peer hangs up or after CloseWait.
package peer
