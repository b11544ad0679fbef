package cluster

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pyrycode/pyrycode-relay/internal/bufpool"
	"github.com/pyrycode/pyrycode-relay/internal/evloop"
)

// heldLoop is a deferrer whose loop pass never ends by itself: the test
// ends it (run), so that every record in between is in one batch.
type heldLoop struct{ tasks []evloop.Task }

func (h *heldLoop) Defer(t evloop.Task) bool { h.tasks = append(h.tasks, t); return true }

func (h *heldLoop) run() {
	for _, t := range h.tasks {
		t.RunTask()
	}
	h.tasks = nil
}

// batchOf builds a kBatch message of records.
func batchOf(recs ...[]byte) []byte {
	b := []byte{kBatch}
	for _, r := range recs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(r)))
		b = append(b, r...)
	}
	return b
}

func binFrame(seq uint64, connID, frame string) []byte {
	return enc{kBinFrame}.u64(seq).str(connID).raw([]byte(frame))
}

// injector publishes raw messages to a node's subject, as another node
// would.
func injector(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Phone frames of several phones, handed over during one pass of an event
// loop, cross as one NATS message and reach the binary in the order they
// were sent, across several batches; a lone frame after them is not held.
func TestBatchOrderAcrossBatches(t *testing.T) {
	ns := startNATS(t)
	a := startNode(t, ns.ClientURL(), "b1", testConfig())
	b := startNode(t, ns.ClientURL(), "b1", testConfig())
	bin := dialBinary(t, a, "batch")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	p1, p2 := phone(t, b, "batch"), phone(t, b, "batch")
	c1 := pair(t, p1, bin, `{"first":1}`)
	c2 := pair(t, p2, bin, `{"first":2}`)
	pe1, pe2 := b.node.entry(c1), b.node.entry(c2)
	if pe1 == nil || pe2 == nil {
		t.Fatal("phone entries missing")
	}
	send := func(pe *phoneEntry, d deferrer, last bool, s string) {
		msg := []byte(env(pe.connID, s))
		if err := pe.deliver(bufpool.Get(len(msg)), msg, last, d); err != nil {
			t.Fatal(err)
		}
	}
	batches0, batched0 := b.node.stats.Batches.Load(), b.node.stats.Batched.Load()
	var want []string
	loop := &heldLoop{}
	for round := range 3 {
		for i := range 5 {
			for _, pe := range []*phoneEntry{pe1, pe2} {
				f := fmt.Sprintf(`{"round":%d,"i":%d}`, round, i)
				send(pe, loop, i == 4, f) // last of its read: still held until the pass ends
				want = append(want, env(pe.connID, f))
			}
		}
		if len(loop.tasks) != 1 {
			t.Fatalf("round %d: %d flushes deferred, want 1", round, len(loop.tasks))
		}
		loop.run()
	}
	if got := b.node.stats.Batches.Load() - batches0; got != 3 {
		t.Fatalf("%d batches published, want 3", got)
	}
	if got := b.node.stats.Batched.Load() - batched0; got != 30 {
		t.Fatalf("%d records batched, want 30", got)
	}
	// Not on a loop, last: published at once, after everything before it.
	send(pe2, nil, true, `{"lone":1}`)
	want = append(want, env(c2, `{"lone":1}`))
	for i, w := range want {
		if got := bin.next(t); got != w {
			t.Fatalf("message %d: binary got %q, want %q", i, got, w)
		}
	}
	if got := b.node.stats.Batches.Load() - batches0; got != 3 {
		t.Fatalf("the lone frame went in a batch (%d batches)", got)
	}
	bin.quiet(t, 100*time.Millisecond)
}

// A batch in which one phone's stream has a hole: that phone is closed 1011
// and gets nothing after the hole (its binary gets
// a 1011 close notice); the other phone in the same batch gets all of its
// frames, in order. A whole batch that went missing closes every phone it
// carried.
func TestBatchGap(t *testing.T) {
	ns := startNATS(t)
	a := startNode(t, ns.ClientURL(), "b2", testConfig())
	b := startNode(t, ns.ClientURL(), "b2", testConfig())
	bin := dialBinary(t, a, "gap")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	px, py := phone(t, b, "gap"), phone(t, b, "gap")
	cx := pair(t, px, bin, `{"x":0}`)
	cy := pair(t, py, bin, `{"y":0}`)
	nc := injector(t, ns.ClientURL())
	gaps0 := b.node.stats.Gaps.Load()
	// Sequence numbers as the owner would send them: nothing has gone to
	// either phone yet. y's 2 is missing.
	if err := nc.Publish(b.node.subj, batchOf(
		binFrame(1, cx, `{"x":1}`),
		binFrame(1, cy, `{"y":1}`),
		binFrame(2, cx, `{"x":2}`),
		binFrame(3, cy, `{"y":3}`),
		binFrame(3, cx, `{"x":3}`),
		binFrame(4, cy, `{"y":4}`),
	)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if got, want := px.next(t), fmt.Sprintf(`{"x":%d}`, i); got != want {
			t.Fatalf("x got %q, want %q", got, want)
		}
	}
	// y's 1 may or may not have been written before the close (a close
	// for a broken stream does not wait for the queue); nothing after
	// the hole ever is.
	py.closed(t, 1011, "relay node unavailable")
	for len(py.msgs) > 0 {
		if got := string(<-py.msgs); got != `{"y":1}` {
			t.Fatalf("y got %q", got)
		}
	}
	if got, want := bin.next(t), `{"conn_id":"`+cy+`","close_code":1011}`; got != want {
		t.Fatalf("binary got %q, want %q", got, want)
	}
	if got := b.node.stats.Gaps.Load() - gaps0; got != 1 {
		t.Fatalf("%d gaps counted, want 1", got)
	}

	// A second phone joins x; then the batch carrying x's 4 and z's 1 is
	// lost, and the next one arrives: both are closed.
	pz := phone(t, b, "gap")
	cz := pair(t, pz, bin, `{"z":0}`)
	if err := nc.Publish(b.node.subj, batchOf(binFrame(5, cx, `{"x":5}`), binFrame(2, cz, `{"z":2}`))); err != nil {
		t.Fatal(err)
	}
	px.closed(t, 1011, "relay node unavailable")
	pz.closed(t, 1011, "relay node unavailable")
	if got := b.node.stats.Gaps.Load() - gaps0; got != 3 {
		t.Fatalf("%d gaps counted, want 3", got)
	}
}

// A batch split by a slow phone: the records for a phone that reads nothing
// overflow its queue partway through a batch, so it is closed (1011 "phone
// backlog full"; its binary gets the close notice) and the rest of its
// records are dropped; its sibling's records, before and after it in the
// same batches, all arrive in order.
func TestBatchSplitBySlowPhone(t *testing.T) {
	ns := startNATS(t)
	cfg := testConfig()
	cfg.MaxFrameBytes = 8 << 10
	cfg.PhoneQueueBytes = 32 << 10
	a := startNode(t, ns.ClientURL(), "b3", cfg)
	b := startNode(t, ns.ClientURL(), "b3", cfg)
	bin := dialBinary(t, a, "split")
	eventually(t, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	_, cs := stalledPhone(t, b, "split", `{"slow":0}`, bin) // never reads
	sib := phone(t, b, "split")
	cb := pair(t, sib, bin, `{"sib":0}`)
	big := `{"pad":"` + strings.Repeat("s", 6000) + `"}`
	notice := `{"conn_id":"` + cs + `","close_code":1011}`
	nc := injector(t, ns.ClientURL())
	seqS, seqB := uint64(0), uint64(0)
	for round := range 500 {
		var recs [][]byte
		var want []string
		for range 8 {
			seqS++
			recs = append(recs, binFrame(seqS, cs, big))
			seqB++
			f := fmt.Sprintf(`{"sib":%d}`, seqB)
			recs = append(recs, binFrame(seqB, cb, f))
			want = append(want, f)
		}
		if err := nc.Publish(b.node.subj, batchOf(recs...)); err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if got := sib.next(t); got != w {
				t.Fatalf("round %d: sibling got %q, want %q", round, got, w)
			}
		}
		select {
		case m := <-bin.msgs:
			if string(m) != notice {
				t.Fatalf("binary got %q, want the slow phone's notice", m)
			}
			if round == 0 {
				t.Fatal("closed before its queue could fill")
			}
			sib.quiet(t, 100*time.Millisecond)
			return
		default:
		}
	}
	// Without the race detector the rounds can all be over before the
	// slow phone's close has run its course (its close frame waits behind
	// a full socket until the write deadline): the notice still comes.
	select {
	case m := <-bin.msgs:
		if string(m) != notice {
			t.Fatalf("binary got %q, want the slow phone's notice", m)
		}
		sib.quiet(t, 100*time.Millisecond)
	case <-time.After(10 * time.Second):
		t.Fatal("the slow phone was never closed")
	}
}
