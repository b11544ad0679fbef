package cluster

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/registry"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

// headroom is kept in front of every frame copied out of a NATS message,
// so the peer's writer can put the WebSocket header there (inline write).
const headroom = 14

// closedCh makes Binary.Deliver a non-blocking attempt: a cross-node
// frame is never waited for on the subscription's goroutine.
var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Phone entry states.
const (
	stPending = iota // registration request in flight
	stActive
	stOrphan // the owner node is gone: grace rules apply here
	stGapped // a gap closed the phone; the owner still needs to hear it is gone
	stDead   // nothing more goes to the owner
)

// phoneEntry is a phone on this node whose server-id is owned by another
// node. It is also the Binary handle the phone's router sends through.
type phoneEntry struct {
	n      *Node
	id     string
	connID string
	ob     *outbox // the owner node's (ob.node)
	p      relay.Phone
	// The phones here under the same id, a list whose head is in
	// Node.byID (guarded by Node.mu).
	prevByID, nextByID *phoneEntry

	mu           sync.Mutex
	state        uint8
	noBinary     bool   // registered during the id's grace period
	outSeq       uint64 // last sequence number sent to the owner
	inSeq        uint64 // last sequence number received from the owner
	pendingEvict *peer.Close
}

var _ relay.RemoteBinary = (*phoneEntry)(nil)

func (pe *phoneEntry) activate(hasBinary bool) {
	pe.mu.Lock()
	if pe.state == stPending {
		pe.state = stActive
	}
	pe.noBinary = !hasBinary
	ev := pe.pendingEvict
	pe.mu.Unlock()
	if ev != nil {
		pe.p.Evict(*ev)
	}
}

// paired reports whether the phone still belongs to its owner's binary.
func (pe *phoneEntry) paired() bool {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	return pe.state == stActive || pe.state == stPending
}

func (pe *phoneEntry) isOrphan() bool {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	return pe.state == stOrphan
}

// Deliver sends the phone's frame (an envelope, or its close notice) to the
// owner node. A phone whose binary is not reachable gets ErrClosed, which
// the router answers with 4404, as for a binary that has gone.
func (pe *phoneEntry) Deliver(buf *bufpool.Buf, msg []byte, _ <-chan struct{}, last bool) error {
	return pe.deliver(buf, msg, last, nil)
}

// TryDeliver is Deliver: it never waits (the frame goes to the owner's
// outbox), so a phone on an event loop hands it over on the loop, and the
// outbox is published once the loop has handled every socket ready now.
func (pe *phoneEntry) TryDeliver(buf *bufpool.Buf, msg []byte, last bool) error {
	d, _ := pe.p.(deferrer)
	return pe.deliver(buf, msg, last, d)
}

func (pe *phoneEntry) deliver(buf *bufpool.Buf, msg []byte, last bool, d deferrer) error {
	pe.mu.Lock()
	if pe.state != stActive || pe.noBinary {
		pe.mu.Unlock()
		return peer.ErrClosed
	}
	pe.outSeq++
	ok := pe.ob.endOn(pe.ob.begin().u8(kPhoneFrame).u64(pe.outSeq).str(pe.connID).raw(msg), last, d)
	pe.mu.Unlock()
	if !ok {
		pe.fail()
		return peer.ErrClosed
	}
	pe.n.stats.MsgsOut[0].Add(1)
	pe.n.stats.BytesOut[0].Add(int64(len(msg)))
	buf.Release()
	return nil
}

// Probe, Closing and Evict are never used on a phone's handle.
func (pe *phoneEntry) Probe(time.Duration) bool { return false }
func (pe *phoneEntry) Closing() bool            { return false }
func (pe *phoneEntry) Evict(peer.Close)         {}

// PhoneGone tells the owner the phone is gone, with the notice its binary
// is due. After a gap the notice is this node's own (1011).
func (pe *phoneEntry) PhoneGone(notice []byte) {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	st := pe.state
	pe.state = stDead
	pe.outSeq++
	switch st {
	case stGapped:
		notice = noticeFor(pe.connID, wire.CloseNodeLost.Code)
	case stActive, stPending:
	default:
		return // the owner is gone, or already forgot this phone
	}
	// Under pe.mu, as every record of the stream: after its frames.
	pe.ob.end(pe.ob.begin().u8(kPhoneGone).u64(pe.outSeq).str(pe.connID).raw(notice), true)
}

// orphan marks the phone as one whose owner node is gone.
func (pe *phoneEntry) orphan() {
	pe.mu.Lock()
	if pe.state == stActive || pe.state == stPending {
		pe.state = stOrphan
	}
	pe.mu.Unlock()
}

// fail closes the phone because its stream cannot be kept whole. It
// reports whether the owner still has the phone registered (and must be
// told it is gone once NATS is back).
func (pe *phoneEntry) fail() bool {
	pe.mu.Lock()
	prev := pe.state
	pe.state = stDead
	pe.mu.Unlock()
	if prev != stDead {
		pe.p.Evict(peer.Close(wire.CloseNodeLost))
	}
	return prev == stActive || prev == stPending || prev == stGapped
}

// tellGone tells the owner the phone is gone, with a 1011 notice for its
// binary (its stream was cut).
func (pe *phoneEntry) tellGone() {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	pe.outSeq++
	pe.ob.end(pe.ob.begin().u8(kPhoneGone).u64(pe.outSeq).str(pe.connID).raw(noticeFor(pe.connID, wire.CloseNodeLost.Code)), true)
}

// evict closes the phone with cl on the owner's word (or a local rule).
func (pe *phoneEntry) evict(cl peer.Close) {
	pe.mu.Lock()
	if pe.state == stPending {
		pe.pendingEvict = &cl
		pe.mu.Unlock()
		return
	}
	pe.mu.Unlock()
	pe.p.Evict(cl)
}

// inOrder checks the next sequence number from the owner; a gap closes the
// phone (its binary gets a 1011 notice) and reports false.
func (pe *phoneEntry) inOrder(seq uint64) bool {
	pe.mu.Lock()
	if pe.state == stDead || pe.state == stGapped {
		pe.mu.Unlock()
		return false
	}
	if seq != pe.inSeq+1 {
		pe.state = stGapped
		pe.mu.Unlock()
		pe.n.stats.Gaps.Add(1)
		pe.n.log.Warn("cluster_gap", "server_id", pe.id, "conn_id", pe.connID)
		pe.p.Evict(peer.Close(wire.CloseNodeLost))
		return false
	}
	pe.inSeq = seq
	pe.mu.Unlock()
	return true
}

// remotePhone is, on the owner node, a phone connected to another node.
type remotePhone struct {
	n      *Node
	ob     *outbox // its node's (ob.node)
	id     string
	connID string
	mu     sync.Mutex
	binary relay.Binary // the binary at registration; nil during grace
	outSeq uint64
	inSeq  uint64
	dead   bool
}

var _ relay.Phone = (*remotePhone)(nil)

// send puts a record of the phone's stream in its node's outbox: a binary
// frame, or a close directive when directive (then with code).
func (rp *remotePhone) send(directive bool, code int, frame []byte, last bool) bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.dead {
		return false
	}
	rp.outSeq++
	e := rp.ob.begin()
	if directive {
		e = e.u8(kDirective).u64(rp.outSeq).str(rp.connID).u16(code)
	} else {
		e = e.u8(kBinFrame).u64(rp.outSeq).str(rp.connID)
	}
	if !rp.ob.end(e.raw(frame), last) {
		rp.dead = true
		return false
	}
	return true
}

func (rp *remotePhone) Deliver(buf *bufpool.Buf, frame []byte, last bool) {
	if rp.send(false, 0, frame, last) {
		rp.n.stats.MsgsOut[1].Add(1)
		rp.n.stats.BytesOut[1].Add(int64(len(frame)))
	}
	buf.Release()
}

func (rp *remotePhone) CloseDirective(buf *bufpool.Buf, frame []byte, code int) {
	if rp.send(true, code, frame, true) {
		rp.n.stats.MsgsOut[1].Add(1)
		rp.n.stats.BytesOut[1].Add(int64(len(frame)))
	}
	buf.Release()
	rp.kill()
}

func (rp *remotePhone) Evict(cl peer.Close) {
	if rp.n.leaving.Load() {
		return // its node orphans it when this node says goodbye
	}
	rp.close(cl, false)
}

// close tells the phone's node to close it with cl and unregisters it at
// once (its node's "gone" may never come if NATS drops it). With notice,
// the binary gets a close notice with cl's code, when one is due.
func (rp *remotePhone) close(cl peer.Close, notice bool) {
	rp.n.evictUnknown(rp.connID, cl) // even if a send failed before: the phone must go
	rp.kill()
	n := rp.n
	n.mu.Lock()
	n.remote.drop(rp.connID, rp)
	n.mu.Unlock()
	var msg []byte
	if notice {
		msg = noticeFor(rp.connID, cl.Code)
	}
	n.phoneLeft(rp, msg)
}

func (rp *remotePhone) pairedWith() relay.Binary {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.binary
}

func (rp *remotePhone) kill() {
	rp.mu.Lock()
	rp.dead = true
	rp.mu.Unlock()
}

// lastIn returns the last sequence number received from the phone's node.
func (rp *remotePhone) lastIn() uint64 {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.inSeq
}

// inOrder checks the next sequence number from the phone's node.
func (rp *remotePhone) inOrder(seq uint64) (ok, gap bool) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.dead {
		return false, false
	}
	if seq != rp.inSeq+1 {
		return false, true
	}
	rp.inSeq = seq
	return true, false
}

// remoteIncumbent is a live binary on another node, as a conflicting claim
// here sees it. Probe asks its node to run the conflict probe.
type remoteIncumbent struct {
	n    *Node
	node string
	id   string
	rev  uint64 // the bucket revision the claim read: a takeover swaps on it
	// unsure: its node did not answer the probe in time, so neither a
	// 4409 nor a takeover is justified (the claim ends 1013).
	unsure bool
}

func (ri *remoteIncumbent) Deliver(*bufpool.Buf, []byte, <-chan struct{}, bool) error {
	return peer.ErrClosed
}

// Probe reports whether the incumbent answered its node's ping in time. No
// responder (the node is gone) or no answer at all counts as silent.
func (ri *remoteIncumbent) Probe(timeout time.Duration) bool {
	msg, err := ri.n.nc.Request(ri.n.prefix+ri.node, enc{kProbe}.str(ri.id).u32(uint32(timeout/time.Millisecond)), timeout+ri.n.cfg.RequestTimeout)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return false // the node is gone: take over
	case err != nil || len(msg.Data) != 1:
		ri.unsure = true
		return false
	}
	return msg.Data[0] == rAnswer
}

// Closing is false: the incumbent's node found it live when asked (one that
// had begun to close would have been reported free).
func (ri *remoteIncumbent) Closing() bool { return false }

// Evict does nothing: the announcement of the new owner makes the
// incumbent's node close it.
func (ri *remoteIncumbent) Evict(peer.Close) {}

// onMsg handles every message sent to this node or to all nodes: one
// record, or a batch of stream records from one node (in the order they
// were sent; each keeps its sequence number, so gaps are found as for
// records sent one by one).
func (n *Node) onMsg(m *nats.Msg) {
	if len(m.Data) == 0 {
		return
	}
	if m.Data[0] != kBatch {
		n.onRecord(m, m.Data, true)
		return
	}
	b := m.Data[1:]
	for len(b) >= 4 {
		l := binary.BigEndian.Uint32(b)
		if uint64(len(b)-4) < uint64(l) || l == 0 {
			return // malformed: what is left is lost, and found as gaps
		}
		rec := b[4 : 4+l]
		b = b[4+l:]
		switch rec[0] {
		case kPhoneFrame, kPhoneGone, kBinFrame, kDirective, kEvict:
			n.onRecord(m, rec, len(b) == 0)
		}
	}
}

// onRecord handles one record of m; final says it is m's last.
func (n *Node) onRecord(m *nats.Msg, rec []byte, final bool) {
	d := &dec{b: rec[1:]}
	switch rec[0] {
	case kPhoneFrame:
		seq, c := d.u64(), d.bytes()
		if d.err == nil {
			n.onPhoneFrame(seq, c, d.rest(), final && lastPending(m))
		}
	case kPhoneGone:
		seq, c := d.u64(), d.str()
		if d.err == nil {
			n.onPhoneGone(seq, c, d.rest())
		}
	case kBinFrame:
		seq, c := d.u64(), d.bytes()
		if d.err == nil {
			n.onBinFrame(seq, c, d.rest(), final && lastPending(m))
		}
	case kDirective:
		seq, c, code := d.u64(), d.str(), d.u16()
		if d.err == nil {
			n.onDirective(seq, c, code, d.rest())
		}
	case kEvict:
		c, code, reason := d.str(), d.u16(), d.str()
		if d.err == nil {
			if pe := n.entry(c); pe != nil {
				pe.evict(peer.Close{Code: code, Reason: reason})
			}
		}
	case kRegister:
		node, id, c, max := d.str(), d.str(), d.str(), d.u16()
		if d.err == nil {
			_ = m.Respond(n.onRegister(node, id, c, max))
		}
	case kQuery:
		id := d.str()
		if d.err == nil {
			_ = m.Respond([]byte{n.onQuery(id)})
		}
	case kProbe:
		id, ms := d.str(), d.u32()
		if d.err == nil {
			go func() { _ = m.Respond([]byte{n.onProbe(id, time.Duration(ms)*time.Millisecond)}) }()
		}
	case kOwner:
		node, id, rev := d.str(), d.str(), d.u64()
		if d.err == nil && node != n.self {
			n.onOwner(id, node, rev)
		}
	case kHeartbeat, kHello:
		node, inst := d.str(), d.str()
		if d.err == nil && node == n.self && inst != n.instance {
			n.idConflict()
		}
		if d.err == nil && node != n.self {
			n.mu.Lock()
			old, known := n.peers[node]
			n.peers[node] = peerState{seen: time.Now(), instance: inst}
			n.mu.Unlock()
			if known && old.instance != "" && old.instance != inst {
				// The same node id, a new process: the old one is gone,
				// with every phone it had. An entry without an instance
				// was made by a phone's registration before anything was
				// heard from the node: this is its first word, not a
				// restart.
				n.nodeGone(node, "restarted")
				n.mu.Lock()
				n.peers[node] = peerState{seen: time.Now(), instance: inst}
				n.mu.Unlock()
			}
			if rec[0] == kHello && n.nc.IsConnected() {
				// The newcomer learns of this node at once, so that it can
				// tell when this node goes.
				n.broadcast(enc{kHeartbeat}.str(n.self).str(n.instance))
			}
		}
	case kBye:
		if node := d.str(); d.err == nil {
			n.nodeGone(node, "left")
		}
	}
}

// lastPending reports whether no other message waits behind m on its
// subscription. Only then is a frame written at once, on this goroutine;
// frames arriving together are queued and go out together, in one system
// call per connection, as on one node (the peer's "last" rule).
func lastPending(m *nats.Msg) bool {
	if m.Sub == nil {
		return true
	}
	n, _, err := m.Sub.Pending()
	return err != nil || n == 0
}

func (n *Node) entry(connID string) *phoneEntry { return n.local.get(connID) }

// copyFrame copies b out of a NATS message into a pooled buffer with room
// for the WebSocket header in front.
func copyFrame(b []byte) (*bufpool.Buf, []byte) {
	buf := bufpool.Get(headroom + len(b))
	copy(buf.B[headroom:], b)
	return buf, buf.B[headroom : headroom+len(b)]
}

// onPhoneFrame delivers a remote phone's envelope to the binary here.
// connID is a slice of the received message.
func (n *Node) onPhoneFrame(seq uint64, connID []byte, env []byte, last bool) {
	n.stats.MsgsIn[0].Add(1)
	n.stats.BytesIn[0].Add(int64(len(env)))
	rp := n.remote.getBytes(connID)
	if rp == nil {
		// A phone this node forgot (NATS was lost meanwhile) or never
		// knew: its node must close it rather than send into the void.
		n.stats.Dropped.Add(1)
		n.evictUnknown(string(connID), peer.Close(wire.CloseNodeLost))
		return
	}
	ok, gap := rp.inOrder(seq)
	if gap {
		n.stats.Gaps.Add(1)
		n.log.Warn("cluster_gap", "server_id", rp.id, "conn_id", rp.connID)
		rp.close(peer.Close(wire.CloseNodeLost), true)
		return
	}
	if !ok { // closed here before (its node may not have heard): again
		n.stats.Dropped.Add(1)
		n.evictUnknown(rp.connID, peer.Close(wire.CloseNodeLost))
		return
	}
	holder := rp.pairedWith()
	if holder == nil {
		rp.close(peer.Close(wire.CloseNoServer), false) // a frame during the grace period
		return
	}
	if _, ok := n.reg.Route(rp.id, holder, connID); !ok {
		// Its binary has gone (grace): as on one node, 4404. Had the id
		// changed hands, the phone would have been evicted (and dead).
		rp.close(peer.Close(wire.CloseNoServer), false)
		return
	}
	buf, data := copyFrame(env)
	switch err := holder.Deliver(buf, data, closedCh, last); {
	case err == nil:
	case err == peer.ErrClosed:
		buf.Release()
		rp.close(peer.Close(wire.CloseNoServer), false)
	default:
		// The binary's queue is over budget: this phone cannot be made to
		// wait across nodes, so it is closed rather than lose a frame, and
		// its binary gets the close notice as for any backlog close.
		buf.Release()
		rp.close(peer.Close(wire.CloseBacklog), true)
	}
}

// onPhoneGone unregisters a remote phone and passes its close notice on.
// If messages went missing just before it, the notice says 1011: the
// binary did not get everything the phone sent.
func (n *Node) onPhoneGone(seq uint64, connID string, notice []byte) {
	n.mu.Lock()
	rp := n.remote.take(connID)
	n.mu.Unlock()
	if rp == nil {
		return
	}
	if len(notice) > 0 && seq != 0 && seq != rp.lastIn()+1 {
		n.stats.Gaps.Add(1)
		notice = noticeFor(connID, wire.CloseNodeLost.Code)
	}
	rp.kill()
	n.phoneLeft(rp, notice)
}

// phoneLeft unregisters rp and gives its binary the notice, when one is
// due: the phone was still registered and the id still has the binary it
// was paired with.
func (n *Node) phoneLeft(rp *remotePhone, notice []byte) {
	holder, removed := n.reg.RemovePhone(rp.id, rp.connID, rp)
	if paired := rp.pairedWith(); !removed || len(notice) == 0 || paired == nil || holder != paired {
		return
	}
	buf, data := copyFrame(notice)
	if holder.Deliver(buf, data, closedCh, true) == nil {
		return
	}
	// Over budget: wait for room off the subscription's goroutine.
	go func() {
		if holder.Deliver(buf, data, nil, true) != nil {
			buf.Release()
		}
	}()
}

// onBinFrame delivers a binary's frame to the phone here. connID is a
// slice of the received message.
func (n *Node) onBinFrame(seq uint64, connID []byte, frame []byte, last bool) {
	n.stats.MsgsIn[1].Add(1)
	n.stats.BytesIn[1].Add(int64(len(frame)))
	pe := n.local.getBytes(connID)
	if pe == nil || !pe.inOrder(seq) {
		n.stats.Dropped.Add(1)
		return
	}
	buf, data := copyFrame(frame)
	pe.p.Deliver(buf, data, last)
}

// onDirective passes a binary's close directive to the phone here.
func (n *Node) onDirective(seq uint64, connID string, code int, frame []byte) {
	pe := n.entry(connID)
	if pe == nil || !pe.inOrder(seq) {
		n.stats.Dropped.Add(1)
		return
	}
	if len(frame) == 0 {
		pe.p.CloseDirective(nil, nil, code)
		return
	}
	buf, data := copyFrame(frame)
	pe.p.CloseDirective(buf, data, code)
}

// onRegister registers a phone of another node under an id owned here.
func (n *Node) onRegister(node, id, connID string, max int) []byte {
	if n.leaving.Load() {
		return []byte{rNo}
	}
	rp := &remotePhone{n: n, ob: n.outboxFor(node), id: id, connID: connID}
	// The binary is set before the registry can hand rp to anyone; a
	// registration refused leaves it unused.
	rp.mu.Lock()
	rp.binary, _ = n.reg.State(id)
	rp.mu.Unlock()
	n.mu.Lock()
	n.remote.put(connID, rp)
	n.mu.Unlock()
	b, err := n.reg.AddPhone(id, connID, rp, max)
	if err != nil {
		n.mu.Lock()
		n.remote.drop(connID, rp)
		n.mu.Unlock()
		if err == errTooMany {
			return []byte{rTooMany}
		}
		return []byte{rNo}
	}
	rp.mu.Lock()
	rp.binary = b // the holder AddPhone saw, which State may have missed
	rp.mu.Unlock()
	has := byte(0)
	if b != nil {
		has = 1
	}
	return []byte{rOK, has}
}

// onQuery answers whether id is held here by a live binary.
func (n *Node) onQuery(id string) byte {
	if n.leaving.Load() {
		return rFree
	}
	if holder, _ := n.reg.State(id); live(holder) {
		return rHeld
	}
	return rFree
}

// onProbe runs the conflict probe against the binary holding id here.
func (n *Node) onProbe(id string, timeout time.Duration) byte {
	holder, _ := n.reg.State(id)
	if n.leaving.Load() || !live(holder) {
		return rFree
	}
	if holder.Probe(timeout) {
		return rAnswer
	}
	return rFree
}

// onOwner handles another node's announcement that it now owns id.
func (n *Node) onOwner(id, owner string, rev uint64) {
	n.mu.Lock()
	mine, claiming := n.owned[id], n.claiming[id] > 0
	n.mu.Unlock()
	// An announcement older than the revision this node wrote is stale;
	// a claim being settled here is decided by its own compare-and-swap.
	if _, known := n.reg.State(id); known && !claiming && (mine == 0 || mine < rev) {
		n.dropID(id, owner)
	}
	n.evictStale(id, owner)
}

// evictStale closes, as for a reclaim, the phones here registered under id
// with a node other than its new owner.
func (n *Node) evictStale(id, owner string) {
	n.mu.Lock()
	var out []*phoneEntry
	for pe := n.byID[id]; pe != nil; pe = pe.nextByID {
		if pe.ob.node != owner {
			out = append(out, pe)
		}
	}
	n.mu.Unlock()
	for _, pe := range out {
		pe.evict(peer.Close(wire.CloseReclaimed))
	}
}

var errTooMany = registry.ErrTooManyPhones

// nodeOfConnID returns the node a conn_id was made on ("c-<node>.<hex>").
func nodeOfConnID(connID string) (string, bool) {
	rest, ok := strings.CutPrefix(connID, "c-")
	i := strings.LastIndexByte(rest, '.')
	if !ok || i <= 0 {
		return "", false
	}
	return rest[:i], true
}

// evictUnknown tells the node a conn_id came from to close that phone.
func (n *Node) evictUnknown(connID string, cl peer.Close) {
	node, ok := nodeOfConnID(connID)
	if !ok || node == n.self {
		return
	}
	ob := n.outboxFor(node)
	ob.end(ob.begin().u8(kEvict).str(connID).u16(cl.Code).str(cl.Reason), true)
}
