// Package wire holds the relay's wire-level helpers: a fast, allocation-free
// JSON validator, the parser for routing envelopes sent by the binary, the
// splicing helpers that wrap a phone's frame into an envelope without
// touching its bytes, the close codes and reasons the relay uses, and the
// header names and id rules of the protocol.
//
// Everything here works on byte slices and, on the common path, neither
// copies nor allocates: these functions run once per forwarded frame.
package wire
