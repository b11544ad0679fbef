package registry

import (
	"fmt"
	"runtime"
	"testing"
)

// heapNow returns the bytes in live heap objects after a full collection,
// and the count and bytes of the allocations made so far.
func heapNow() (live, mallocs, total uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.Mallocs, ms.TotalAlloc
}

// TestIdleIDMemory measures what the registry keeps for 10,000 ids with
// one phone each, with interface handles as the relay's are (relay.Binary
// and relay.Phone). Handles, ids and conn_ids are made beforehand, so the
// figures are the registry's own records: the entry and its share of the
// shard maps, then what the first phone adds to it. It fails if a first
// phone costs more than a pair's worth again (a map made for one phone
// cost 336 bytes).
func TestIdleIDMemory(t *testing.T) {
	const n = 10000
	ids := make([]string, n)
	bins := make([]any, n)
	phones := make([]any, n)
	for i := range n {
		ids[i] = fmt.Sprintf("id-%08d", i)
		bins[i] = &bin{ids[i]}
		phones[i] = &phone{name: ids[i]}
	}
	conn := connID(0)
	l0, _, _ := heapNow()
	r := New[any, any]()
	for i := range n {
		r.Claim(ids[i], bins[i])
	}
	l1, m1, t1 := heapNow()
	for i := range n {
		if _, err := r.AddPhone(ids[i], conn, phones[i], 16); err != nil {
			t.Fatal(err)
		}
	}
	l2, m2, t2 := heapNow()
	if p, ok := r.Route(ids[n-1], bins[n-1], []byte(conn)); !ok || p != phones[n-1] {
		t.Fatal("Route missed")
	}
	runtime.KeepAlive(r)
	per := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / n }
	t.Logf("per id: %.1f bytes live once claimed, %.1f more with one phone (%.2f allocations, %.1f bytes allocated)",
		per(l0, l1), per(l1, l2), per(m1, m2), per(t1, t2))
	if a := per(t1, t2); a > 64 {
		t.Errorf("a first phone allocates %.1f bytes, want at most 64", a)
	}
}
