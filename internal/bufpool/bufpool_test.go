package bufpool

import "testing"

func TestGetSizes(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 513, 1024, 1025, 4096, 300 << 10, 1 << 20} {
		b := Get(n)
		if len(b.B) < n {
			t.Fatalf("Get(%d) gave %d bytes", n, len(b.B))
		}
		if n > 512 && len(b.B) >= 2*n {
			t.Fatalf("Get(%d) gave %d bytes, more than one class up", n, len(b.B))
		}
		b.Release()
	}
	big := Get(3 << 20)
	if big.class != -1 || len(big.B) != 3<<20 {
		t.Fatalf("oversize buffer: class %d len %d", big.class, len(big.B))
	}
	big.Release()
}

func TestGrowKeepsPrefix(t *testing.T) {
	b := Get(10)
	copy(b.B, "hello")
	g := Grow(b, 5, 5000)
	if string(g.B[:5]) != "hello" || len(g.B) < 5000 {
		t.Fatalf("grow lost data: %q len %d", g.B[:5], len(g.B))
	}
	g.Release()
}

func BenchmarkGetRelease(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Get(1100).Release()
	}
}
