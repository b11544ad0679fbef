// Package cluster lets several relays act as one, on NATS: a phone and its
// binary may be connected to different nodes and the wire contract still
// holds. It implements relay.Directory; the routing core does not know
// whether a binary or phone it talks to lives on this node or another.
//
// # Ownership
//
// The node holding a server-id's binary owns the id. Ownership is a
// JetStream key-value entry (key: the id, value: the owner's node id) in
// one bucket per cluster, and it only ever changes hands through NATS's own
// guarantees: a fresh claim is a Create (fails if the key exists: first
// claim wins cluster-wide), every later change (reclaim, takeover) is an
// Update on the revision last read (compare-and-swap; never a blind
// write), and a grace expiry is a Delete on the revision the owner wrote.
// Nothing is refreshed per id: liveness is per node (below).
//
// The owner is the one place that knows the id's state: its binary, the
// grace period, and every phone registered under the id, on whatever
// node. It keeps them in the same in-memory registry a single node uses,
// with handles for remote phones; the phone cap (4429), grace, reclaim and
// the conflict probe therefore behave exactly as on one node.
//
// A claim on node B for an id owned by node A asks A (request/reply)
// whether the id is held by a live binary. "Free" (grace, closing, or not
// held) or no responder at all (A is gone) means B updates the entry on the
// revision it read and broadcasts the change; "held" means the conflict
// probe, which A runs against its binary; a silent incumbent is taken over
// the same way. Only an incumbent that answered gives 4409. A claim that
// cannot be checked (NATS unreachable, the owner too slow to answer) is
// refused with 1013 "try again later", never with 4409.
//
// # Addressing
//
// Each node subscribes to one subject of its own, <cluster>.node.<node-id>,
// and to the cluster's broadcast subject. Messages are small binary records
// (kind, sequence, conn_id, payload): a phone's frame travels as the exact
// envelope bytes the binary will read (spliced on the phone's node, never
// re-encoded), a binary's frame as the exact bytes the phone will read.
// Stream records for one node go through its outbox (outbox.go): records
// ready at the same time cross as one NATS message, a lone one at once.
//
// # Order and loss
//
// One NATS connection per node keeps per-publisher order. Every phone
// stream carries a sequence number in each direction; a gap (a slow
// consumer, a reconnect) closes that phone with 1011 rather than deliver a
// stream with a hole. While this node is cut off from NATS, cross-node
// phones are closed (1011) and claims refused (1013); pairs whose phone and
// binary are both here keep working. On reconnect the node checks every id
// it owns against the bucket and gives up those another node took.
//
// # Liveness
//
// Every node broadcasts a heartbeat each second and a goodbye when it
// leaves. A node not heard from for DeadAfter, and that does not answer
// when asked directly, is gone: the phones here
// whose binary was there are treated like phones in a grace period (4404 on
// their next frame, 4404 "binary reclaimed server-id" when the binary
// reclaims elsewhere, 1000 when the grace period passes), and the phones
// there registered under ids owned here are forgotten (their binaries get a
// close notice). This costs O(nodes) messages, never O(ids).
package cluster
