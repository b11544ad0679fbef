package cluster

import (
	"encoding/binary"
	"sync"

	"github.com/pyrycode/pyrycode-relay/internal/evloop"
)

// batchLimit is the size at which a batch is published at once, whatever
// follows: batches stay far below NATS's max_payload (a record alone may be
// larger, up to the largest frame; it then goes alone).
const batchLimit = 64 << 10

// batchHead is the room in front of a batch's first record: the kind byte
// kBatch and the first record's length.
const batchHead = 1 + 4

// outbox collects the stream records (phone frames and notices, binary
// frames, close directives, evictions) this node sends to one other node,
// so that records ready at the same time cross NATS as one message. Every
// stream record to a node goes through its outbox, in the order its sender
// appended it: per-phone order holds across batches as it did per message.
//
// A record is published at once (with whatever waits before it) when its
// sender says nothing else is ready ("last", as the peer's own write rule:
// a lone frame is never delayed), when the batch reaches batchLimit, or,
// for records whose sender had more input ready, when the node's flusher
// goroutine runs: it is woken by the first such record, so a burst that
// ends in a record for another destination (or a local one) is still sent
// without waiting for anything. Nothing waits on a timer.
type outbox struct {
	n    *Node
	node string // the destination
	subj string

	mu     sync.Mutex
	buf    []byte // kBatch, then records each after its u32 length
	recs   int    // records in buf
	queued bool   // on the flusher's list
}

// outboxFor returns the outbox for node (made on first use).
func (n *Node) outboxFor(node string) *outbox {
	n.omu.Lock()
	defer n.omu.Unlock()
	ob := n.outs[node]
	if ob == nil {
		ob = &outbox{n: n, node: node, subj: n.prefix + node}
		n.outs[node] = ob
	}
	return ob
}

// begin locks the outbox and starts a record: the caller appends the
// record to the returned enc and hands it to end.
func (ob *outbox) begin() enc {
	ob.mu.Lock()
	if len(ob.buf) == 0 {
		ob.buf = append(ob.buf, kBatch)
	}
	return append(enc(ob.buf), 0, 0, 0, 0)
}

// deferrer is a phone's handle as the relay gives it (its localPhone):
// Defer runs a task on the phone's event loop once the loop has handled
// every socket ready now, or reports false when the phone is not on a loop.
type deferrer interface {
	Defer(t evloop.Task) bool
}

// end finishes the record begun at begin, publishes what waits when last
// (or when the batch is full) or else makes sure the flusher will, and
// unlocks the outbox. It reports false when NATS refused a publish made
// here (it is then disconnected or closed).
func (ob *outbox) end(e enc, last bool) bool { return ob.endOn(e, last, nil) }

// endOn is end for a record made by a phone's handler on an event loop (d):
// the outbox is then published when the loop has handled every socket
// ready now, so that the frames of one pass over the loop's ready sockets
// cross as one message. A lone frame waits for nothing: its loop had
// nothing else to do.
func (ob *outbox) endOn(e enc, last bool, d deferrer) bool {
	at := len(ob.buf) // the record's length field
	binary.BigEndian.PutUint32(e[at:], uint32(len(e)-at-4))
	ok := true
	if ob.recs > 0 && len(e) > batchLimit {
		// The earlier records go first; this one starts the next batch.
		ok = ob.publishLocked(e[:at])
		e = e[:batchHead-4+copy(e[batchHead-4:], e[at:])]
	}
	ob.buf = e
	ob.recs++
	switch {
	case len(e) >= batchLimit, last && d == nil:
		if !ob.publishLocked(ob.buf) {
			ok = false
		}
	case ob.queued: // a flush is on its way and takes this record too
	case d != nil && d.Defer(ob):
		ob.queued = true
	case last:
		if !ob.publishLocked(ob.buf) {
			ok = false
		}
	default:
		ob.queued = true
		ob.n.queueFlush(ob)
	}
	ob.mu.Unlock()
	return ok
}

// publishLocked publishes the records in b (a batch as kept in buf) and
// empties the outbox: one record goes as itself, several as a kBatch
// message.
func (ob *outbox) publishLocked(b []byte) bool {
	msg := b
	if ob.recs == 1 {
		msg = b[batchHead:]
	}
	ok := ob.n.publish(ob.subj, msg)
	if ob.recs > 1 {
		ob.n.stats.Batches.Add(1)
		ob.n.stats.Batched.Add(int64(ob.recs))
	}
	ob.recs = 0
	if cap(ob.buf) > 4*batchLimit {
		ob.buf = nil // a very large record passed: do not keep its room
	} else {
		ob.buf = ob.buf[:0]
	}
	return ok
}

// flush publishes whatever waits in the outbox.
func (ob *outbox) flush() {
	ob.mu.Lock()
	ob.queued = false
	if ob.recs > 0 {
		ob.publishLocked(ob.buf)
	}
	ob.mu.Unlock()
}

// release drops what waits and the batch room (the destination is gone).
func (ob *outbox) release() {
	ob.mu.Lock()
	ob.buf, ob.recs = nil, 0
	ob.mu.Unlock()
}

// RunTask is flush, as an event loop's task (see endOn).
func (ob *outbox) RunTask() { ob.flush() }

// discard drops whatever waits (NATS was lost: the streams it belonged to
// are being closed, and must not be continued once NATS is back).
func (ob *outbox) discard() {
	ob.mu.Lock()
	ob.recs = 0
	ob.buf = ob.buf[:0]
	ob.mu.Unlock()
}

// queueFlush puts ob on the flusher's list and wakes the flusher.
func (n *Node) queueFlush(ob *outbox) {
	n.fmu.Lock()
	n.dirty = append(n.dirty, ob)
	n.fmu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default: // already woken
	}
}

// flusher publishes the outboxes whose last records came with more input
// behind them: by the time it runs, their senders have usually appended the
// rest of their burst, and it all goes as one message.
func (n *Node) flusher() {
	defer close(n.fdone)
	var list []*outbox
	for {
		select {
		case <-n.kick:
		case <-n.stop:
			return
		}
		n.fmu.Lock()
		list, n.dirty = n.dirty, list[:0]
		n.fmu.Unlock()
		for i, ob := range list {
			ob.flush()
			list[i] = nil
		}
	}
}

// flushAll publishes every outbox's waiting records: called before a
// broadcast, which must not overtake them.
func (n *Node) flushAll() {
	n.omu.Lock()
	obs := make([]*outbox, 0, len(n.outs))
	for _, ob := range n.outs {
		obs = append(obs, ob)
	}
	n.omu.Unlock()
	for _, ob := range obs {
		ob.flush()
	}
}

// discardAll drops every outbox's waiting records (NATS was lost).
func (n *Node) discardAll() {
	n.omu.Lock()
	defer n.omu.Unlock()
	for _, ob := range n.outs {
		ob.discard()
	}
}
