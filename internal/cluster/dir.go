package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/registry"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

type claimResult = registry.ClaimResult[relay.Binary, relay.Phone]

var closeNormal = peer.Close(wire.CloseNormal)

// live reports whether b is a binary whose connection has not begun to
// close (one that has is gone: a claim against it is a reclaim).
func live(b relay.Binary) bool { return b != nil && !b.Closing() }

func (n *Node) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), n.cfg.RequestTimeout)
}

func (n *Node) setOwned(id string, rev uint64) {
	n.mu.Lock()
	n.owned[id] = rev
	n.mu.Unlock()
}

func (n *Node) ownedRev(id string) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.owned[id]
}

func (n *Node) unavailable() claimResult {
	n.stats.Claims[ClaimUnavailable].Add(1)
	n.stats.Refused.Add(1)
	return claimResult{Outcome: registry.Unavailable}
}

// Claim asks for id on behalf of b, cluster-wide (see the package doc).
//
// b is held in the local registry before the bucket is asked or changed, so
// a node that asks this one meanwhile finds a live binary here, never a
// moment in which the id looks free to two claimants; if the bucket then
// says no, the hold is undone.
func (n *Node) Claim(id string, b relay.Binary) claimResult {
	for range 4 {
		if !n.connected.Load() || n.leaving.Load() {
			return n.unavailable()
		}
		n.beginClaim(id)
		res, again := n.claim(id, b)
		n.endClaim(id)
		if !again {
			return res
		}
	}
	return n.unavailable()
}

// claim is one attempt of Claim; again says the bucket changed under it.
func (n *Node) claim(id string, b relay.Binary) (res claimResult, again bool) {
	res = n.reg.Claim(id, b)
	if res.Outcome == registry.Conflict {
		// A live binary here holds it: the conflict probe runs here.
		n.stats.Claims[ClaimLocal].Add(1)
		return res, false
	}
	ctx, cancel := n.ctx()
	rev, err := n.kv.Create(ctx, key(id), []byte(n.self))
	cancel()
	if err == nil {
		n.setOwned(id, rev)
		n.stats.Claims[ClaimFresh].Add(1)
		return res, false
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		n.undo(id, b, res)
		return n.unavailable(), false
	}
	ctx, cancel = n.ctx()
	e, err := n.kv.Get(ctx, key(id))
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		n.undo(id, b, res)
		return res, true // released meanwhile: create it again
	case err != nil:
		n.undo(id, b, res)
		return n.unavailable(), false
	}
	owner := string(e.Value())
	if owner == n.self {
		// Ours already: a reclaim after a drop. The revision is bumped so
		// that a node just told "free" cannot take the id at the same time.
		if !n.update(id, e.Revision()) {
			n.undo(id, b, res)
			return res, true
		}
		n.stats.Claims[ClaimLocal].Add(1)
		if res.Outcome == registry.Claimed {
			// The bucket names this node but the registry did not know the
			// id: an earlier process with this node id held it, and phones
			// elsewhere may still be registered under it. They go as for
			// any reclaim.
			n.announce(id)
			res.Outcome = registry.Reclaimed
		}
		return res, false
	}
	switch n.query(owner, id) {
	case rHeld:
		n.undo(id, b, res)
		n.stats.Claims[ClaimConflict].Add(1)
		return claimResult{Outcome: registry.Conflict, Incumbent: &remoteIncumbent{n: n, node: owner, id: id, rev: e.Revision()}}, false
	case rFree:
		if testHookBeforeSwap != nil {
			testHookBeforeSwap(n)
		}
		if !n.update(id, e.Revision()) {
			n.undo(id, b, res)
			return res, true
		}
		n.announce(id)
		n.stats.Claims[ClaimFromPeer].Add(1)
		if res.Outcome == registry.Claimed {
			res.Outcome = registry.Reclaimed // the id lived on elsewhere: its phones there are evicted
		}
		return res, false
	default:
		n.undo(id, b, res)
		return n.unavailable(), false
	}
}

// testHookBeforeSwap, set only by tests, runs between a claim's "free"
// answer and its swap, to widen that window.
var testHookBeforeSwap func(*Node)

// undo gives up a hold that the bucket did not confirm. Phones that had
// registered under it, or under the grace period it replaced, are closed:
// the id is not this node's.
func (n *Node) undo(id string, b relay.Binary, res claimResult) {
	gone := peer.Close(wire.CloseNoServer)
	n.reg.Release(id, b, 0, func(phones []relay.Phone) {
		for _, p := range phones {
			p.Evict(gone)
		}
	})
	for _, p := range res.Evicted {
		p.Evict(gone)
	}
}

// beginClaim and endClaim mark an id whose claim is being settled here:
// an announcement from another node does not drop that hold (the claim's
// own compare-and-swap decides, and undoes the hold if it lost).
func (n *Node) beginClaim(id string) {
	n.mu.Lock()
	n.claiming[id]++
	n.mu.Unlock()
}

func (n *Node) endClaim(id string) {
	n.mu.Lock()
	if n.claiming[id]--; n.claiming[id] <= 0 {
		delete(n.claiming, id)
	}
	n.mu.Unlock()
}

// update moves id to this node by compare-and-swap on rev.
func (n *Node) update(id string, rev uint64) bool {
	ctx, cancel := n.ctx()
	defer cancel()
	nrev, err := n.kv.Update(ctx, key(id), []byte(n.self), rev)
	if err != nil {
		return false
	}
	n.setOwned(id, nrev)
	return true
}

// announce tells every node that id now belongs here, at the revision
// written here, and closes the phones here registered under its old owner.
func (n *Node) announce(id string) {
	n.broadcast(enc{kOwner}.str(n.self).str(id).u64(n.ownedRev(id)))
	n.evictStale(id, n.self)
}

// query asks owner whether id is held by a live binary there: rHeld, rFree
// (or no responder: the node is gone), or 0 when it could not be asked. A
// node this one has not heard from for DeadAfter (though it has been up that
// long) counts as gone even if NATS has not noticed yet (a machine that
// vanished without closing its connections).
func (n *Node) query(owner, id string) byte {
	if n.presumedGone(owner) {
		return rFree
	}
	msg, err := n.nc.Request(n.prefix+owner, enc{kQuery}.str(id), n.cfg.RequestTimeout)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return rFree
	case err != nil || len(msg.Data) != 1:
		return 0
	}
	return msg.Data[0]
}

// presumedGone reports whether node has been silent for DeadAfter while
// this node has been up for longer than that.
func (n *Node) presumedGone(node string) bool {
	if time.Since(n.started) < 2*n.cfg.DeadAfter {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.peers[node]
	return !ok
}

// TakeOver gives id to b if incumbent still holds it.
func (n *Node) TakeOver(id string, incumbent, b relay.Binary) ([]relay.Phone, bool) {
	if ri, ok := incumbent.(*remoteIncumbent); ok {
		if ri.unsure {
			return nil, false // its node did not answer the probe: not settled
		}
		n.beginClaim(id)
		defer n.endClaim(id)
		res := n.reg.Claim(id, b) // held first, as in Claim
		if res.Outcome == registry.Conflict {
			return nil, false
		}
		if !n.update(id, ri.rev) {
			n.undo(id, b, res)
			return nil, false
		}
		n.announce(id)
		n.stats.Claims[ClaimTakeover].Add(1)
		return res.Evicted, true
	}
	if !n.update(id, n.ownedRev(id)) {
		return nil, false
	}
	return n.reg.TakeOver(id, incumbent, b)
}

// Release ends b's hold on id: the grace period runs here, the owner. When
// it ends unclaimed, the id is deleted from the bucket (on the revision
// written here, so a takeover meanwhile wins: then the phones are closed as
// for a reclaim, not with 1000). While leaving, ids are left in the bucket:
// other nodes find this node gone and reclaim at once.
func (n *Node) Release(id string, b relay.Binary, grace time.Duration, expire func([]relay.Phone)) bool {
	return n.reg.Release(id, b, grace, func(phones []relay.Phone) {
		n.mu.Lock()
		rev := n.owned[id]
		delete(n.owned, id)
		n.mu.Unlock()
		if !n.leaving.Load() && rev != 0 {
			ctx, cancel := n.ctx()
			err := n.kv.Delete(ctx, key(id), jetstream.LastRevision(rev))
			cancel()
			// A failed compare-and-swap (the key's revision moved: another
			// node took the id) reports the "key exists" code.
			if errors.Is(err, jetstream.ErrKeyExists) {
				for _, p := range phones {
					p.Evict(peer.Close(wire.CloseReclaimed))
				}
				expire(nil)
				return
			}
		}
		expire(phones)
	})
}

// AddPhone registers a phone: with the local registry when the id is owned
// here, else with the owner node.
func (n *Node) AddPhone(id, connID string, p relay.Phone, max int) (relay.Binary, error) {
	if _, known := n.reg.State(id); known {
		return n.reg.AddPhone(id, connID, p, max)
	}
	if !n.connected.Load() {
		n.stats.Refused.Add(1)
		return nil, registry.ErrUnavailable
	}
	ctx, cancel := n.ctx()
	e, err := n.kv.Get(ctx, key(id))
	cancel()
	var owner string
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// Any replica may answer a read; a lagging one may miss a claim
		// that has already succeeded. 4404 only when the leader agrees.
		var found bool
		owner, found, err = n.leaderGet(id)
		switch {
		case err != nil:
			n.stats.Refused.Add(1)
			return nil, registry.ErrUnavailable
		case !found:
			return nil, registry.ErrNoServer
		}
	case err != nil:
		n.stats.Refused.Add(1)
		return nil, registry.ErrUnavailable
	default:
		owner = string(e.Value())
	}
	if owner == n.self {
		return n.reg.AddPhone(id, connID, p, max)
	}
	b, err := n.registerWith(owner, id, connID, p, max)
	if errors.Is(err, registry.ErrNoServer) {
		// The owner may have been read from a lagging replica: if the
		// leader names another node, that one is asked once.
		if o, found, lerr := n.leaderGet(id); lerr == nil && found && o != owner {
			if o == n.self {
				return n.reg.AddPhone(id, connID, p, max)
			}
			return n.registerWith(o, id, connID, p, max)
		}
	}
	return b, err
}

// registerWith registers a phone of this node with owner, the node the
// bucket names for id.
func (n *Node) registerWith(owner, id, connID string, p relay.Phone, max int) (relay.Binary, error) {
	pe := &phoneEntry{n: n, id: id, connID: connID, p: p, ob: n.outboxFor(owner)}
	n.mu.Lock()
	n.local.put(connID, pe)
	if head := n.byID[id]; head != nil {
		pe.nextByID, head.prevByID = head, pe
	}
	n.byID[id] = pe
	n.mu.Unlock()
	msg, err := n.nc.Request(n.prefix+owner, enc{kRegister}.str(n.self).str(id).str(connID).u16(max), n.cfg.RequestTimeout)
	var reply byte
	if err == nil && len(msg.Data) >= 1 {
		reply = msg.Data[0]
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders), reply == rNo:
		n.unlink(pe)
		return nil, registry.ErrNoServer
	case reply == rTooMany:
		n.unlink(pe)
		return nil, registry.ErrTooManyPhones
	case reply != rOK || len(msg.Data) != 2:
		n.unlink(pe)
		n.stats.Refused.Add(1)
		// The owner may have registered it before its answer was lost.
		ob := pe.ob
		ob.end(ob.begin().u8(kPhoneGone).u64(0).str(connID), true)
		return nil, registry.ErrUnavailable
	}
	pe.activate(msg.Data[1] == 1)
	n.mu.Lock()
	if _, ok := n.peers[owner]; !ok {
		n.peers[owner] = peerState{seen: time.Now()} // watched from now on, like every node heard from
	}
	n.mu.Unlock()
	return pe, nil
}

// leaderGet reads id's entry in the ownership bucket from its stream's
// leader, through the JetStream API's message get (the bucket allows
// direct gets, which any replica may answer). found is false when there
// is no entry or it is a deletion.
func (n *Node) leaderGet(id string) (owner string, found bool, err error) {
	bucket := n.kv.Bucket()
	req, err := json.Marshal(struct {
		LastBySubj string `json:"last_by_subj"`
	}{"$KV." + bucket + "." + key(id)})
	if err != nil {
		return "", false, err
	}
	msg, err := n.nc.Request("$JS.API.STREAM.MSG.GET.KV_"+bucket, req, n.cfg.RequestTimeout)
	if err != nil {
		return "", false, err
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Data []byte `json:"data"`
			Hdrs []byte `json:"hdrs"`
		} `json:"message"`
	}
	switch err := json.Unmarshal(msg.Data, &resp); {
	case err != nil:
		return "", false, err
	case resp.Error != nil && resp.Error.Code == 404:
		return "", false, nil
	case resp.Error != nil:
		return "", false, fmt.Errorf("cluster: reading the bucket: %d %s", resp.Error.Code, resp.Error.Description)
	case resp.Message == nil:
		return "", false, errors.New("cluster: reading the bucket: an empty answer")
	}
	if len(resp.Message.Hdrs) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Hdrs)
		if err != nil {
			return "", false, err
		}
		if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return "", false, nil
		}
	}
	return string(resp.Message.Data), true, nil
}

// unlink forgets a phone entry.
func (n *Node) unlink(pe *phoneEntry) {
	n.mu.Lock()
	n.local.drop(pe.connID, pe)
	if pe.prevByID != nil || n.byID[pe.id] == pe {
		switch {
		case pe.prevByID != nil:
			pe.prevByID.nextByID = pe.nextByID
		case pe.nextByID != nil:
			n.byID[pe.id] = pe.nextByID
		default:
			delete(n.byID, pe.id)
		}
		if pe.nextByID != nil {
			pe.nextByID.prevByID = pe.prevByID
		}
		pe.prevByID, pe.nextByID = nil, nil
	}
	n.mu.Unlock()
}

// RemovePhone unregisters a phone whose connection ended.
func (n *Node) RemovePhone(id, connID string, p relay.Phone) (relay.Binary, bool) {
	if pe := n.local.get(connID); pe != nil && pe.p == p {
		n.unlink(pe)
		if pe.paired() {
			return pe, true
		}
		return nil, true
	}
	return n.reg.RemovePhone(id, connID, p)
}

// Route returns the phone registered as connID under id, if b holds id.
func (n *Node) Route(id string, b relay.Binary, connID []byte) (relay.Phone, bool) {
	return n.reg.Route(id, b, connID)
}

// Counts returns the ids owned here with a live binary and in grace.
func (n *Node) Counts() (live, grace int) { return n.reg.Counts() }

// dropID gives up an id another node took (newOwner; empty when the entry
// is gone): a binary still holding it here was taken over (1011), and its
// phones here are evicted as for a reclaim. Phones elsewhere are their
// nodes' business (they saw the same announcement).
func (n *Node) dropID(id, newOwner string) {
	n.mu.Lock()
	delete(n.owned, id)
	n.mu.Unlock()
	holder, phones, ok := n.reg.Drop(id)
	if !ok {
		return
	}
	n.log.Info("cluster_id_moved", "server_id", id, "to", newOwner)
	for _, p := range phones {
		// Remote phones' nodes saw the same announcement, but a phone
		// registering just then may not have been indexed there yet:
		// they are told directly too (a second eviction is harmless).
		p.Evict(peer.Close(wire.CloseReclaimed))
	}
	if holder != nil {
		holder.Evict(peer.Close(wire.CloseHeartbeat))
	}
}

// noticeFor builds a close notice for connID.
func noticeFor(connID string, code int) []byte {
	return wire.AppendCloseNotice(nil, connID, code)
}
