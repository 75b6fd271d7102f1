package gateway

import (
	"hash/maphash"
	"sync"
)

const shardCount = 64

var shardSeed = maphash.MakeSeed()

func shardOf(key string) int { return int(maphash.String(shardSeed, key) % shardCount) }

// shardedMap is a string-keyed map split over 64 locks, like centrifuge's
// hub shards, so connects on many cores do not contend on one mutex.
type shardedMap[V any] struct {
	shards [shardCount]shard[V]
}

type shard[V any] struct {
	sync.Mutex
	m map[string]V
}

// lock locks and returns the shard of key; the caller unlocks it. (No
// closure: this runs once per connect and must not allocate.)
func (s *shardedMap[V]) lock(key string) *shard[V] {
	sh := &s.shards[shardOf(key)]
	sh.Lock()
	return sh
}

func newShardedMap[V any]() *shardedMap[V] {
	s := &shardedMap[V]{}
	for i := range s.shards {
		s.shards[i].m = map[string]V{}
	}
	return s
}

func (s *shardedMap[V]) get(key string) (V, bool) {
	sh := &s.shards[shardOf(key)]
	sh.Lock()
	v, ok := sh.m[key]
	sh.Unlock()
	return v, ok
}

// snapshot returns every value (for shutdown and resync).
func (s *shardedMap[V]) snapshot() []V {
	var out []V
	for i := range s.shards {
		sh := &s.shards[i]
		sh.Lock()
		for _, v := range sh.m {
			out = append(out, v)
		}
		sh.Unlock()
	}
	return out
}

func (s *shardedMap[V]) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.Lock()
		n += len(sh.m)
		sh.Unlock()
	}
	return n
}
