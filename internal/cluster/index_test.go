package cluster

import (
	"fmt"
	"sort"
	"testing"
)

// The index behaves as one map whatever shard a key falls in: string and
// byte lookups agree, drop removes only the value it names, collect sees
// every shard.
func TestIndex(t *testing.T) {
	x := newIndex[*remotePhone]()
	phones := map[string]*remotePhone{}
	for i := range 500 {
		k := fmt.Sprintf("node-%d.%08x", i%3, i*7919)
		rp := &remotePhone{connID: k}
		phones[k] = rp
		x.put(k, rp)
	}
	if n := x.size(); n != 500 {
		t.Fatalf("size %d, want 500", n)
	}
	for k, rp := range phones {
		if x.get(k) != rp || x.getBytes([]byte(k)) != rp {
			t.Fatalf("%s: lookups disagree", k)
		}
	}
	if x.get("node-9.missing") != nil || x.getBytes([]byte("node-9.missing")) != nil {
		t.Fatal("a key never put is found")
	}

	k := "node-0.00000000"
	x.drop(k, &remotePhone{connID: k}) // another value: stays
	if x.get(k) != phones[k] {
		t.Fatal("drop removed a value it did not name")
	}
	x.drop(k, phones[k])
	if x.get(k) != nil {
		t.Fatal("drop left the value it named")
	}
	if got := x.take("node-1.00001eef"); got != phones["node-1.00001eef"] || x.get("node-1.00001eef") != nil {
		t.Fatal("take did not return and remove the value")
	}

	node2 := x.collect(func(rp *remotePhone) bool { return rp.connID[:6] == "node-2" }, false)
	if len(node2) != 166 || x.size() != 498 {
		t.Fatalf("collect without removing: %d found, size %d", len(node2), x.size())
	}
	removed := x.collect(func(rp *remotePhone) bool { return rp.connID[:6] == "node-2" }, true)
	if len(removed) != 166 || x.size() != 332 {
		t.Fatalf("collect removing: %d removed, size %d", len(removed), x.size())
	}
	var ids []string
	for _, rp := range removed {
		ids = append(ids, rp.connID)
		if x.get(rp.connID) != nil {
			t.Fatalf("%s still found after collect removed it", rp.connID)
		}
	}
	sort.Strings(ids)
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] {
			t.Fatalf("%s collected twice", ids[i])
		}
	}
}
