package peer

import (
	"strconv"
	"testing"
)

func BenchmarkUnmaskCopy(b *testing.B) {
	for _, n := range []int{64, 1024, 16384} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			src := make([]byte, n)
			dst := make([]byte, n)
			for i := range src {
				src[i] = byte(i)
			}
			key := [4]byte{1, 2, 3, 4}
			b.SetBytes(int64(n))
			for b.Loop() {
				unmaskCopy(dst, src, key, 1)
			}
		})
	}
}
