package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/registry"
	"github.com/pyrycode/pyrycode-relay/internal/relay"
	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

// Config configures a cluster node.
type Config struct {
	URLs     string // comma-separated NATS server URLs (credentials may be inside)
	Creds    string // NATS credentials file
	CA       string // CA file to trust for tls:// URLs
	Cert     string // client certificate file
	Key      string // client key file
	Name     string // cluster name: prefix of every subject and of the bucket
	NodeID   string // this node's id; random when empty
	Replicas int    // JetStream replicas of the ownership bucket (default 1)

	// MaxFrameBytes is the relay's largest message; NATS must carry it
	// with its envelope (max_payload), or Start fails.
	MaxFrameBytes int

	Grace          time.Duration // as the relay's --grace (orphaned phones' grace)
	RequestTimeout time.Duration // a request to another node (default 2 s)
	Heartbeat      time.Duration // node heartbeat period (default 1 s)
	DeadAfter      time.Duration // a node silent this long is gone (default 3 heartbeats)
	ConnectTimeout time.Duration // first connection to NATS (default 10 s)

	Log *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = "pyrycode-relay"
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Grace <= 0 {
		c.Grace = 30 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 2 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Second
	}
	if c.DeadAfter <= 0 {
		c.DeadAfter = 3 * c.Heartbeat
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// RandomNodeID returns a fresh random node id.
func RandomNodeID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "n" + hex.EncodeToString(b[:])
}

// Stats are the node's counters. Direction 0 is toward binaries (phone
// frames, notices), 1 toward phones.
type Stats struct {
	MsgsOut, BytesOut [2]atomic.Int64
	MsgsIn, BytesIn   [2]atomic.Int64
	Gaps              atomic.Int64 // stream gaps detected (the phone was closed)
	Refused           atomic.Int64 // claims and phones refused with 1013 (NATS or owner unreachable)
	Claims            [numClaimOutcomes]atomic.Int64
	NodesLost         atomic.Int64
	Dropped           atomic.Int64 // cross-node messages for a phone or id no longer here
	Batches           atomic.Int64 // NATS messages published carrying several records
	Batched           atomic.Int64 // records published inside those
}

// Claim outcomes counted in Stats.Claims.
const (
	ClaimFresh       = iota // the id was free cluster-wide
	ClaimLocal              // owned here already (reclaim or conflict handled locally)
	ClaimFromPeer           // taken from another node that had released it or is gone
	ClaimConflict           // another node's live binary holds it (probe follows)
	ClaimTakeover           // a silent incumbent elsewhere was taken over
	ClaimUnavailable        // could not be checked (1013)
	numClaimOutcomes
)

// ClaimOutcomeNames label Stats.Claims.
var ClaimOutcomeNames = [numClaimOutcomes]string{"fresh", "local", "from_peer", "conflict", "takeover", "unavailable"}

// reg is the owner-side registry type.
type reg = registry.Registry[relay.Binary, relay.Phone]

// Node is one relay's membership in a cluster. It implements
// relay.Directory.
type Node struct {
	cfg    Config
	log    *slog.Logger
	self   string
	subj   string // this node's subject
	prefix string // "<cluster>.node."
	all    string // broadcast subject
	nc     *nats.Conn
	kv     jetstream.KeyValue
	reg    *reg
	stats  Stats

	connected atomic.Bool
	leaving   atomic.Bool

	mu     sync.Mutex
	owned  map[string]uint64      // ids owned here -> revision we wrote
	peers  map[string]peerState   // node -> when last heard, which process
	lost   map[string]*time.Timer // gone nodes -> orphan grace timer
	sweeps map[string]*time.Timer // gone nodes -> removal of their stale bucket entries
	local  *index[*phoneEntry]    // phones here whose owner is elsewhere, by conn_id (changed under mu)
	byID   map[string]*phoneEntry // the first of those phones under each id (a list)
	remote *index[*remotePhone]   // phones elsewhere registered under ids owned here (changed under mu)
	// unreached are conn_ids of phones elsewhere forgotten while NATS was
	// lost; their nodes are told to close them once it is back.
	unreached []string
	untold    []*phoneEntry
	claiming  map[string]int // ids whose claim is being settled here
	started   time.Time

	reconciling, reconcileAgain bool

	instance string       // random per process: tells this node from another with the same id
	conflict atomic.Int64 // unix seconds of the last node-id conflict logged
	subs     []*nats.Subscription
	stop     chan struct{}
	done     chan struct{}

	omu   sync.Mutex
	outs  map[string]*outbox // by destination node
	fmu   sync.Mutex
	dirty []*outbox // outboxes the flusher is to publish
	kick  chan struct{}
	fdone chan struct{}
}

var _ relay.Directory = (*Node)(nil)

// Start connects to NATS, makes sure the ownership bucket exists and joins
// the cluster. It fails when NATS cannot be reached within ConnectTimeout.
func Start(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if cfg.NodeID == "" {
		cfg.NodeID = RandomNodeID()
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Log,
		self:     cfg.NodeID,
		prefix:   cfg.Name + ".node.",
		all:      cfg.Name + ".all",
		reg:      registry.New[relay.Binary, relay.Phone](),
		owned:    make(map[string]uint64),
		peers:    make(map[string]peerState),
		claiming: make(map[string]int),
		started:  time.Now(),
		lost:     make(map[string]*time.Timer),
		sweeps:   make(map[string]*time.Timer),
		local:    newIndex[*phoneEntry](),
		byID:     make(map[string]*phoneEntry),
		remote:   newIndex[*remotePhone](),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		outs:     make(map[string]*outbox),
		kick:     make(chan struct{}, 1),
		fdone:    make(chan struct{}),
	}
	n.subj = n.prefix + n.self
	n.instance = RandomNodeID()
	opts := []nats.Option{
		nats.Name("pyrycode-relay " + n.self),
		nats.Timeout(cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// Nothing is buffered while disconnected: a publish then fails
		// and the stream it belonged to is closed, never silently lost.
		nats.ReconnectBufSize(-1),
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { n.onDisconnect(err) }),
		nats.ReconnectHandler(func(*nats.Conn) { n.onReconnect() }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				// Messages to this node were dropped: gaps close the
				// streams they hit, and an ownership announcement that
				// was lost is made up for by checking the bucket.
				n.log.Warn("cluster_slow_consumer", "node", n.self)
				n.startReconcile()
			}
		}),
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.CA != "" {
		opts = append(opts, nats.RootCAs(cfg.CA))
	}
	if cfg.Cert != "" || cfg.Key != "" {
		opts = append(opts, nats.ClientCert(cfg.Cert, cfg.Key))
	}
	nc, err := nats.Connect(cfg.URLs, opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to NATS: %w", err)
	}
	n.nc = nc
	if need := int64(cfg.MaxFrameBytes) + 1024; nc.MaxPayload() < need {
		nc.Close()
		return nil, fmt.Errorf("cluster: NATS max_payload is %d bytes; --max-frame-bytes needs at least %d", nc.MaxPayload(), need)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnectTimeout)
	defer cancel()
	// An existing bucket is used as it is (an operator may have made it
	// with more replicas); only a missing one is created.
	n.kv, err = js.KeyValue(ctx, BucketName(cfg.Name))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		n.kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      BucketName(cfg.Name),
			Description: "pyrycode-relay server-id owners",
			History:     1,
			Replicas:    cfg.Replicas,
			Storage:     jetstream.FileStorage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) { // another relay made it just now
			n.kv, err = js.KeyValue(ctx, BucketName(cfg.Name))
		}
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: ownership bucket: %w", err)
	}
	for _, s := range []string{n.subj, n.all} {
		sub, err := nc.Subscribe(s, n.onMsg)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("cluster: subscribe: %w", err)
		}
		n.subs = append(n.subs, sub)
	}
	// One request to itself sets up the client's reply subscription now,
	// so that its interest has reached every NATS server of a cluster
	// before another node first answers this one.
	if _, err := nc.Request(n.subj, enc{kQuery}.str(""), cfg.ConnectTimeout); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n.connected.Store(true)
	n.broadcast(enc{kHello}.str(n.self).str(n.instance))
	go n.flusher()
	go n.heartbeat()
	n.log.Info("cluster_joined", "node", n.self, "cluster", cfg.Name)
	return n, nil
}

// peerState is what a node knows of another.
type peerState struct {
	seen     time.Time
	instance string // the process behind the node id
	checking bool   // silent for DeadAfter: being asked directly
}

// confirmGone asks a node whose heartbeats stopped whether it is there
// (heartbeats can be late on a loaded machine; a node that answers is not
// gone). No responder, or no answer within RequestTimeout, means gone.
func (n *Node) confirmGone(node string) {
	_, err := n.nc.Request(n.prefix+node, enc{kQuery}.str(""), n.cfg.RequestTimeout)
	n.mu.Lock()
	p, ok := n.peers[node]
	if ok && err == nil {
		p.seen, p.checking = time.Now(), false
		n.peers[node] = p
	}
	n.mu.Unlock()
	if !ok || err == nil {
		return // answered, or already handled (goodbye, restart)
	}
	if !n.nc.IsConnected() {
		// This node is the one cut off: it cannot tell. Ask again later.
		n.mu.Lock()
		if p, ok := n.peers[node]; ok {
			p.checking = false
			n.peers[node] = p
		}
		n.mu.Unlock()
		return
	}
	n.nodeGone(node, "silent")
}

// BucketName is the ownership bucket's name for a cluster name: characters
// a bucket name cannot hold are escaped as _XX.
func BucketName(cluster string) string {
	var b strings.Builder
	b.WriteString("pyry_owners_")
	for i := 0; i < len(cluster); i++ {
		c := cluster[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "_%02X", c)
	}
	return b.String()
}

// key is an id's key in the bucket: server-ids may hold characters keys
// cannot (':'), so ids are base64url-encoded.
func key(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

// ID returns this node's id.
func (n *Node) ID() string { return n.self }

// Stats returns the node's counters.
func (n *Node) Stats() *Stats { return &n.stats }

// Connected reports whether the node is connected to NATS.
func (n *Node) Connected() bool { return n.connected.Load() }

// Health is the "cluster" object of /healthz.
func (n *Node) Health() any {
	state := "connected"
	if !n.connected.Load() {
		state = "disconnected"
	}
	return map[string]string{"node": n.self, "nats": state}
}

// Leave starts leaving the cluster (the relay is draining): ids released
// from now on are left to the cluster's grace period rather than deleted,
// and phones on other nodes are left to their nodes, which treat them as
// orphaned once this node says goodbye.
func (n *Node) Leave() { n.leaving.Store(true) }

// Close says goodbye and disconnects from NATS.
func (n *Node) Close() {
	n.leaving.Store(true)
	select {
	case <-n.stop:
		return
	default:
	}
	close(n.stop)
	<-n.done
	<-n.fdone
	n.broadcast(enc{kBye}.str(n.self)) // after every record still waiting
	_ = n.nc.Flush()
	n.nc.Close()
	n.mu.Lock()
	for _, t := range n.lost {
		t.Stop()
	}
	for _, t := range n.sweeps {
		t.Stop()
	}
	n.mu.Unlock()
}

// sweep removes from the bucket the entries a gone node left behind, one
// grace period after it went, so that the bucket does not keep the ids of
// every node that ever died. One node does it (the live node with the
// smallest id; if two think they are, the deletes are compare-and-swap and
// harmless), and only if the gone node still has no responder: a node that
// merely lost NATS for a while keeps its entries. An entry a claim took
// meanwhile has a new revision and is left alone.
func (n *Node) sweep(node string) {
	n.mu.Lock()
	delete(n.sweeps, node)
	first := true
	for p := range n.peers {
		if p < n.self {
			first = false
		}
	}
	_, back := n.peers[node]
	n.mu.Unlock()
	if !first || back || !n.connected.Load() || n.leaving.Load() {
		return
	}
	if _, err := n.nc.Request(n.prefix+node, enc{kQuery}.str(""), n.cfg.RequestTimeout); !errors.Is(err, nats.ErrNoResponders) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := n.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return
	}
	defer w.Stop()
	type stale struct {
		key string
		rev uint64
	}
	var out []stale
	for e := range w.Updates() {
		if e == nil {
			break // every current entry has been seen
		}
		if string(e.Value()) == node {
			out = append(out, stale{e.Key(), e.Revision()})
		}
	}
	removed := 0
	for _, s := range out {
		if n.kv.Delete(ctx, s.key, jetstream.LastRevision(s.rev)) == nil {
			removed++
		}
	}
	if removed > 0 {
		n.log.Info("cluster_swept", "node", node, "ids", removed)
	}
}

func (n *Node) heartbeat() {
	defer close(n.done)
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.nc.IsConnected() {
			// Even while reconciling: the node is alive, and others must
			// not take it for gone.
			n.broadcast(enc{kHeartbeat}.str(n.self).str(n.instance))
		}
		now := time.Now()
		var silent []string
		n.mu.Lock()
		for node, p := range n.peers {
			if now.Sub(p.seen) > n.cfg.DeadAfter && !p.checking {
				p.checking = true
				n.peers[node] = p
				silent = append(silent, node)
			}
		}
		n.mu.Unlock()
		for _, node := range silent {
			go n.confirmGone(node)
		}
	}
}

// publish sends one message; it reports false when NATS did not take it.
// Stream records to a node go through its outbox instead (see outbox).
func (n *Node) publish(subj string, data []byte) bool {
	return n.nc.Publish(subj, data) == nil
}

// broadcast sends a record to every node, after the records waiting in
// this node's outboxes (an ownership change must not overtake them).
func (n *Node) broadcast(data []byte) bool {
	n.flushAll()
	return n.publish(n.all, data)
}

func (n *Node) onDisconnect(err error) {
	n.connected.Store(false)
	select {
	case <-n.stop:
		return // our own Close
	default:
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	n.log.Warn("cluster_nats_disconnected", "node", n.self, "err", msg)
	n.discardAll()
	// Cross-node streams cannot be kept whole: close the phones here whose
	// binary is elsewhere, and forget the phones elsewhere registered here.
	n.mu.Lock()
	entries := n.local.collect(func(*phoneEntry) bool { return true }, false)
	n.mu.Unlock()
	for _, e := range entries {
		if e.fail() {
			// Its owner must still hear it is gone, once NATS is back.
			n.mu.Lock()
			n.untold = append(n.untold, e)
			n.mu.Unlock()
		}
	}
	gone := n.forgetRemote(func(*remotePhone) bool { return true }, wire.CloseNodeLost.Code)
	// Their nodes are told once NATS is back (reconcile); a frame from one
	// of them before that gets the same answer (evictUnknown).
	n.mu.Lock()
	for _, rp := range gone {
		n.unreached = append(n.unreached, rp.connID)
	}
	n.mu.Unlock()
}

func (n *Node) onReconnect() {
	n.log.Info("cluster_nats_reconnected", "node", n.self)
	n.startReconcile()
}

// startReconcile runs reconcile unless one is already running; one asked
// for meanwhile runs after it.
func (n *Node) startReconcile() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.reconciling {
		n.reconcileAgain = true
		return
	}
	n.reconciling = true
	go func() {
		for {
			n.reconcile()
			n.mu.Lock()
			if !n.reconcileAgain {
				n.reconciling = false
				n.mu.Unlock()
				return
			}
			n.reconcileAgain = false
			n.mu.Unlock()
		}
	}()
}

// reconcile brings this node back in line with the cluster after NATS was
// lost (or messages to it were dropped): owners of phones closed here are
// told, nodes of phones forgotten here are told, and every id owned here is
// checked against the bucket in one pass; those another node took meanwhile
// are given up. Claims are accepted again only once that has succeeded; it
// is retried until it does (or the node stops).
func (n *Node) reconcile() {
	for attempt := 0; ; attempt++ {
		select {
		case <-n.stop:
			return
		default:
		}
		if attempt > 0 {
			time.Sleep(time.Second)
		}
		if !n.nc.IsConnected() {
			return // the next reconnect starts another
		}
		n.mu.Lock()
		unreached, untold := n.unreached, n.untold
		n.unreached, n.untold = nil, nil
		n.mu.Unlock()
		for _, c := range unreached {
			n.evictUnknown(c, peer.Close(wire.CloseNodeLost))
		}
		for _, e := range untold {
			e.tellGone()
		}
		owners, err := n.allOwners()
		if err != nil {
			n.log.Warn("cluster_reconcile_failed", "node", n.self, "err", err.Error())
			continue
		}
		n.reg.IDs(func(id string) bool {
			if o := owners[key(id)]; o != n.self {
				n.dropID(id, o)
			}
			return true
		})
		n.connected.Store(n.nc.IsConnected())
		return
	}
}

// allOwners reads the whole bucket in one pass: key -> owner node. One
// attempt is bounded (a bucket whose leader is being elected may not answer
// at all); reconcile retries.
func (n *Node) allOwners() (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), max(5*time.Second, 2*n.cfg.RequestTimeout))
	defer cancel()
	w, err := n.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	out := make(map[string]string)
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return out, nil // every current entry has been seen
			}
			out[e.Key()] = string(e.Value())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// idConflict reports, at most once a minute, that another process uses this
// node's id: both receive every message meant for either, which breaks
// routing until one of them is given another --node-id.
func (n *Node) idConflict() {
	now := time.Now().Unix()
	if last := n.conflict.Load(); now-last < 60 || !n.conflict.CompareAndSwap(last, now) {
		return
	}
	n.log.Error("cluster_node_id_conflict", "node", n.self)
}

// nodeGone handles a node that said goodbye or went silent.
func (n *Node) nodeGone(node, why string) {
	if node == n.self {
		return
	}
	n.mu.Lock()
	delete(n.peers, node)
	orphans := n.local.collect(func(e *phoneEntry) bool { return e.ob.node == node }, false)
	if len(orphans) > 0 {
		if t := n.lost[node]; t != nil {
			t.Stop()
		}
		n.lost[node] = time.AfterFunc(n.cfg.Grace, func() { n.orphansExpired(node) })
	}
	if n.sweeps[node] == nil {
		n.sweeps[node] = time.AfterFunc(n.cfg.Grace, func() { n.sweep(node) })
	}
	n.mu.Unlock()
	n.stats.NodesLost.Add(1)
	n.log.Info("node_lost", "node", node, "why", why, "orphaned_phones", len(orphans))
	for _, e := range orphans {
		e.orphan()
	}
	n.forgetRemote(func(rp *remotePhone) bool { return rp.ob.node == node }, wire.CloseGoingAway.Code)
	// Its outbox goes too: node ids are new per process by default, so
	// every restart elsewhere would otherwise leave one (and its batch
	// room) behind for good. A record still sent through it by a phone
	// being closed goes nowhere, as anything sent to a gone node does.
	n.omu.Lock()
	ob := n.outs[node]
	delete(n.outs, node)
	n.omu.Unlock()
	if ob != nil {
		ob.release()
	}
}

// orphansExpired closes, with 1000, the phones orphaned by a lost node whose
// ids nobody reclaimed within the grace period.
func (n *Node) orphansExpired(node string) {
	n.mu.Lock()
	delete(n.lost, node)
	out := n.local.collect(func(e *phoneEntry) bool { return e.ob.node == node && e.isOrphan() }, false)
	n.mu.Unlock()
	for _, e := range out {
		e.evict(closeNormal)
	}
}

// forgetRemote unregisters the remote phones match selects (their node is
// gone, or this node lost NATS): their binaries get a close notice with
// code, as for a phone that went away.
func (n *Node) forgetRemote(match func(*remotePhone) bool, code int) []*remotePhone {
	n.mu.Lock()
	out := n.remote.collect(match, true)
	n.mu.Unlock()
	for _, rp := range out {
		rp.kill()
		n.phoneLeft(rp, noticeFor(rp.connID, code))
	}
	return out
}
