package cluster

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkRoundTrip times phone -> binary -> phone round trips through a
// 2-node cluster, one frame in flight, with the binary on the phone's node
// (same-node) or on the other node (cross-node). Compare the two in one run:
//
//	go test -run '^$' -bench RoundTrip -benchtime 3s ./internal/cluster
//
// The figure includes the test's own WebSocket clients; relay-load measures
// the relays' CPU alone (docs/performance.md).
func BenchmarkRoundTrip(b *testing.B) {
	for _, cross := range []bool{false, true} {
		name := "same-node"
		if cross {
			name = "cross-node"
		}
		b.Run(name, func(b *testing.B) { benchRoundTrip(b, cross) })
	}
}

func benchRoundTrip(b *testing.B, cross bool) {
	ns := startNATS(b)
	cfg := testConfig()
	a := startNode(b, ns.ClientURL(), "bench", cfg)
	other := a
	if cross {
		other = startNode(b, ns.ClientURL(), "bench", cfg)
	}
	bin := dialBinary(b, a, "bench-rt")
	eventually(b, "binary registered", func() bool { l, _ := a.node.Counts(); return l == 1 })
	ph := phone(b, other, "bench-rt")
	cid := pair(b, ph, bin, `{"warm":1}`)
	payload := `{"v":2,"type":"noise_msg","data":"` + strings.Repeat("x", 1000) + `"}`
	down := env(cid, payload)
	b.SetBytes(int64(2 * len(payload)))
	b.ResetTimer()
	for range b.N {
		ph.send(b, payload)
		if up := bin.next(b); len(up) != len(down) {
			b.Fatalf("binary got %q", up)
		}
		bin.send(b, down)
		if got := ph.next(b); got != payload {
			b.Fatalf("phone got %q", got)
		}
	}
}

// BenchmarkIndexLookupParallel is the per-frame conn_id lookup of a
// cross-node frame, from several cores at once (-cpu 1,2,4,8): each
// lookup takes only its shard's read lock.
func BenchmarkIndexLookupParallel(b *testing.B) {
	x := newIndex[*remotePhone]()
	keys := make([][]byte, 4096)
	for i := range keys {
		k := fmt.Sprintf("node-a.%016x", i*7919)
		keys[i] = []byte(k)
		x.put(k, &remotePhone{connID: k})
	}
	var start atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(start.Add(1021)) // each goroutine walks the keys from elsewhere
		for pb.Next() {
			if x.getBytes(keys[i&(len(keys)-1)]) == nil {
				b.Fatal("missing")
			}
			i++
		}
	})
}
