// Package ratelimit is the proxy's local rate limit: token buckets kept in
// memory, one for all requests or one per key (a client address, a
// header's value), bounded in number so that a client spraying keys
// cannot exhaust memory.
//
// A bucket is a GCRA (generic cell rate algorithm) state: one int64, the
// theoretical arrival time of the next request, advanced by the emission
// interval (fill_interval / tokens_per_fill) for each request let through
// and refused once it runs more than the bucket's depth ahead of now. It is
// a token bucket refilled evenly rather than in steps, updated with one
// compare-and-swap.
//
// Allow is safe for concurrent use. With no key it takes no lock; with a
// key it locks one of 256 shards for a map lookup. It allocates nothing
// for a key it has seen.
package ratelimit

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Config is a limit: MaxTokens deep, TokensPerFill tokens every
// FillInterval, at most MaxKeys buckets for a keyed limit.
type Config struct {
	MaxTokens     int
	TokensPerFill int
	FillInterval  time.Duration
	MaxKeys       int
}

// Limiter is a set of token buckets of one configuration.
type Limiter struct {
	cfg      Config
	interval int64 // nanoseconds per token
	depth    int64 // nanoseconds of burst: interval × MaxTokens
	epoch    time.Time
	global   atomic.Int64
	shards   []shard
	perShard int
}

const numShards = 256

type shard struct {
	mu    sync.Mutex
	index map[uint64]int32 // key hash -> slot
	slots []slot
	hand  int // next slot to consider for eviction
	_     [40]byte
}

type slot struct {
	key uint64
	tat int64
}

// New returns a limiter. cfg must be valid: MaxTokens and TokensPerFill at
// least 1, FillInterval positive; MaxKeys 0 means the limiter is used
// without keys.
func New(cfg Config) *Limiter {
	l := &Limiter{cfg: cfg, epoch: time.Now()}
	l.interval = int64(cfg.FillInterval) / int64(cfg.TokensPerFill)
	if l.interval < 1 {
		l.interval = 1
	}
	l.depth = l.interval * int64(cfg.MaxTokens)
	if cfg.MaxKeys > 0 {
		l.perShard = (cfg.MaxKeys + numShards - 1) / numShards
		l.shards = make([]shard, numShards)
		for i := range l.shards {
			l.shards[i].index = make(map[uint64]int32, l.perShard)
			l.shards[i].slots = make([]slot, 0, l.perShard)
		}
	}
	return l
}

// Decision is the outcome of Allow, with what the x-ratelimit headers say.
type Decision struct {
	Allowed bool
	// Limit is the bucket's depth; Remaining the tokens left after this
	// request.
	Limit, Remaining int
	// Reset is how long until the bucket is full again; RetryAfter, for a
	// refused request, how long until a token is available.
	Reset, RetryAfter time.Duration
}

func (l *Limiter) now() int64 { return int64(time.Since(l.epoch)) + l.depth }

// Allow takes a token from the bucket for no key.
func (l *Limiter) Allow() Decision {
	now := l.now()
	for {
		tat := l.global.Load()
		d, next := l.decide(tat, now)
		if !d.Allowed || l.global.CompareAndSwap(tat, next) {
			return d
		}
	}
}

// AllowKey takes a token from the bucket of key (the bytes are hashed and
// not retained). A limiter made without MaxKeys uses one bucket for all.
func (l *Limiter) AllowKey(key []byte) Decision {
	if l.shards == nil {
		return l.Allow()
	}
	h := xxhash.Sum64(key)
	s := &l.shards[h%numShards]
	now := l.now()
	s.mu.Lock()
	i, ok := s.index[h]
	if !ok {
		i = s.insert(h, l.perShard, now, l.depth)
	}
	d, next := l.decide(s.slots[i].tat, now)
	if d.Allowed {
		s.slots[i].tat = next
	}
	s.mu.Unlock()
	return d
}

// insert makes a slot for h: a free one, or one taken from another key.
// The victim is the first slot, from the clock hand on, whose bucket is
// full (its key has been idle long enough that forgetting it changes
// nothing); failing that among a few, the slot under the hand.
func (s *shard) insert(h uint64, max int, now, depth int64) int32 {
	if len(s.slots) < max {
		s.slots = append(s.slots, slot{key: h})
		s.index[h] = int32(len(s.slots) - 1)
		return int32(len(s.slots) - 1)
	}
	victim := s.hand
	for j := 0; j < 8; j++ {
		k := (s.hand + j) % len(s.slots)
		if s.slots[k].tat <= now-depth {
			victim = k
			break
		}
	}
	s.hand = (victim + 1) % len(s.slots)
	delete(s.index, s.slots[victim].key)
	s.slots[victim] = slot{key: h}
	s.index[h] = int32(victim)
	return int32(victim)
}

// decide applies one request to a bucket whose theoretical arrival time
// is tat: zero for a new bucket (full).
func (l *Limiter) decide(tat, now int64) (Decision, int64) {
	if tat < now-l.depth {
		tat = now - l.depth // a full bucket does not fill further
	}
	next := tat + l.interval
	d := Decision{Limit: l.cfg.MaxTokens}
	if next > now {
		d.RetryAfter = time.Duration(next - now)
		d.Reset = time.Duration(tat - (now - l.depth))
		return d, tat
	}
	d.Allowed = true
	d.Remaining = int((now - next) / l.interval)
	d.Reset = time.Duration(next - (now - l.depth))
	return d, next
}

// Keys is the number of buckets the limiter holds, for tests and metrics.
func (l *Limiter) Keys() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}

// MaxKeys is the most buckets the limiter holds.
func (l *Limiter) MaxKeys() int { return l.perShard * len(l.shards) }
