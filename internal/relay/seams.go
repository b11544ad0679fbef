package relay

import (
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/registry"
)

// Binary is a binary connection as the router sees it, wherever it lives.
// Implementations are safe for concurrent use and never block except where
// stated.
type Binary interface {
	// Deliver queues a message (an envelope or a close notice) for the
	// binary, waiting while its queue is over budget: phone-to-binary
	// traffic is back-pressured, never dropped. It returns early with an
	// error when cancel closes or the binary is gone; the caller keeps buf
	// only when an error is returned. last says no other message is
	// arriving with this one, so it may be written at once.
	Deliver(buf *bufpool.Buf, msg []byte, cancel <-chan struct{}, last bool) error
	// Probe pings the binary and reports whether it answers within timeout.
	// It reports false as soon as the binary's connection begins to close.
	Probe(timeout time.Duration) bool
	// Closing reports whether the binary's connection has begun to close
	// (a close frame sent or received, the socket closing or closed). Such
	// a binary carries no more traffic: a new claim for its id replaces it
	// as a reclaim, without a probe.
	Closing() bool
	// Evict closes the binary with cl.
	Evict(cl peer.Close)
}

// RemoteBinary is implemented by the Binary handle a cluster directory gives
// a phone whose binary lives on another node. When the phone's connection
// has ended, the router calls PhoneGone exactly once, with the close notice
// the binary is due (nil for none), instead of delivering the notice itself:
// the binary's node must also learn that the phone is gone.
type RemoteBinary interface {
	Binary
	PhoneGone(notice []byte)
}

// Phone is a phone connection as the router sees it, wherever it lives.
type Phone interface {
	// Deliver queues frame for the phone without blocking; a phone whose
	// queue would overflow is closed ("phone backlog full"). It always takes
	// buf. last is as for Binary.Deliver.
	Deliver(buf *bufpool.Buf, frame []byte, last bool)
	// CloseDirective delivers frame (nil for none) after everything queued
	// before it and then closes the phone with code. No close notice
	// follows. It always takes buf (which may be nil).
	CloseDirective(buf *bufpool.Buf, frame []byte, code int)
	// Evict closes the phone with cl because its binary changed or left; no
	// close notice follows.
	Evict(cl peer.Close)
}

// Directory records which binary holds each server-id and which phones are
// registered under it. The single-node implementation is
// registry.Registry; the contract is that registry package's documentation.
type Directory interface {
	Claim(id string, b Binary) registry.ClaimResult[Binary, Phone]
	TakeOver(id string, incumbent, b Binary) ([]Phone, bool)
	Release(id string, b Binary, grace time.Duration, expire func([]Phone)) bool
	AddPhone(id, connID string, p Phone, max int) (Binary, error)
	RemovePhone(id, connID string, p Phone) (Binary, bool)
	Route(id string, b Binary, connID []byte) (Phone, bool)
	Counts() (live, grace int)
}

// PushSink receives validated push-wake requests. Wake must not block: it
// runs on the binary's read loop. platform is "fcm" or "apns"; token is
// secret and must never be logged.
type PushSink interface {
	Wake(serverID, platform, token string)
}

// dropPush is the PushSink used until a push sender is configured: every
// wake is dropped and counted.
type dropPush struct{ stats *Stats }

func (d dropPush) Wake(string, string, string) { d.stats.PushDropped.Add(1) }
