package cluster

import (
	"hash/maphash"
	"sync"
)

// indexShards is the number of independently locked parts of an index.
const indexShards = 64

// index maps conn_ids to a node's phone records (the phones here whose
// binary is elsewhere, and the phones elsewhere registered here). Every
// cross-node frame looks one up, so it is split into shards, each with its
// own lock: frames of different phones delivered on different cores meet
// on a lock one time in 64 instead of every time, as the registry's shards
// do on one node. Changes are still made under Node.mu, which keeps the
// index in step with the rest of the node's state; lookups need only their
// shard.
type index[V comparable] struct {
	seed   maphash.Seed
	shards [indexShards]struct {
		mu sync.RWMutex
		m  map[string]V
		_  [64]byte // keeps neighbouring shards' locks off one cache line
	}
}

func newIndex[V comparable]() *index[V] {
	x := &index[V]{seed: maphash.MakeSeed()}
	for i := range x.shards {
		x.shards[i].m = make(map[string]V)
	}
	return x
}

// shardOf and shardOfBytes agree: maphash hashes a string and the same
// bytes alike.
func (x *index[V]) shardOf(key string) int { return int(maphash.String(x.seed, key) % indexShards) }

func (x *index[V]) shardOfBytes(key []byte) int {
	return int(maphash.Bytes(x.seed, key) % indexShards)
}

// getBytes returns the value for key, which is not kept (a lookup that
// does not allocate: key is a slice of a received NATS message).
func (x *index[V]) getBytes(key []byte) V {
	s := &x.shards[x.shardOfBytes(key)]
	s.mu.RLock()
	v := s.m[string(key)]
	s.mu.RUnlock()
	return v
}

func (x *index[V]) get(key string) V {
	s := &x.shards[x.shardOf(key)]
	s.mu.RLock()
	v := s.m[key]
	s.mu.RUnlock()
	return v
}

func (x *index[V]) put(key string, v V) {
	s := &x.shards[x.shardOf(key)]
	s.mu.Lock()
	s.m[key] = v
	s.mu.Unlock()
}

// take removes key and returns what it held.
func (x *index[V]) take(key string) V {
	s := &x.shards[x.shardOf(key)]
	s.mu.Lock()
	v := s.m[key]
	delete(s.m, key)
	s.mu.Unlock()
	return v
}

// drop removes key if it still holds v.
func (x *index[V]) drop(key string, v V) {
	s := &x.shards[x.shardOf(key)]
	s.mu.Lock()
	if s.m[key] == v {
		delete(s.m, key)
	}
	s.mu.Unlock()
}

// collect returns the values match selects, removing them when remove is
// set. Each shard is looked at under its own lock, one after another.
func (x *index[V]) collect(match func(V) bool, remove bool) []V {
	var out []V
	for i := range x.shards {
		s := &x.shards[i]
		if remove {
			s.mu.Lock()
		} else {
			s.mu.RLock()
		}
		for k, v := range s.m {
			if match(v) {
				out = append(out, v)
				if remove {
					delete(s.m, k)
				}
			}
		}
		if remove {
			s.mu.Unlock()
		} else {
			s.mu.RUnlock()
		}
	}
	return out
}

// size returns the number of entries (tests and statistics).
func (x *index[V]) size() int {
	n := 0
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
