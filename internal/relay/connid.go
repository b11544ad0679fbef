package relay

import (
	"crypto/cipher"
	"crypto/des"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync/atomic"
)

// connIDs makes conn_ids that are unique for the life of the process and
// unguessable: a counter enciphered with a random key under a 64-bit block
// cipher. A block cipher is a permutation, so distinct counters can never
// give the same id, and without the key the next id cannot be predicted.
// Triple DES is used only as that keyed permutation; nothing secret is
// protected by it beyond the unpredictability of ids.
type connIDs struct {
	block  cipher.Block
	prefix string // "c-" plus an optional node id, leaving room for a cluster
	ctr    atomic.Uint64
}

// newConnIDs returns a generator; node, when non-empty, is embedded so that
// ids from different relays of a cluster never collide.
func newConnIDs(node string) *connIDs {
	key := make([]byte, 24)
	if _, err := rand.Read(key); err != nil {
		panic("relay: no randomness for conn ids: " + err.Error())
	}
	block, err := des.NewTripleDESCipher(key)
	if err != nil {
		panic("relay: conn id cipher: " + err.Error())
	}
	prefix := "c-"
	if node != "" {
		prefix += node + "."
	}
	return &connIDs{block: block, prefix: prefix}
}

// next returns a fresh conn_id. Safe for concurrent use.
func (g *connIDs) next() string {
	var in, out [8]byte
	binary.BigEndian.PutUint64(in[:], g.ctr.Add(1))
	g.block.Encrypt(out[:], in[:])
	var buf [16]byte
	hex.Encode(buf[:], out[:])
	return g.prefix + string(buf[:])
}
