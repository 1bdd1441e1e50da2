package ratelimit

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	l := New(Config{MaxTokens: 3, TokensPerFill: 3, FillInterval: 300 * time.Millisecond})
	for i := 0; i < 3; i++ {
		d := l.Allow()
		if !d.Allowed || d.Remaining != 2-i || d.Limit != 3 {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d := l.Allow()
	if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 100*time.Millisecond || d.Reset > 300*time.Millisecond {
		t.Fatalf("fourth request: %+v, want refused with a token in at most 100ms", d)
	}
	time.Sleep(d.RetryAfter)
	if d := l.Allow(); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after RetryAfter: %+v, want one token", d)
	}
}

func TestKeysHaveTheirOwnBuckets(t *testing.T) {
	l := New(Config{MaxTokens: 1, TokensPerFill: 1, FillInterval: time.Hour, MaxKeys: 100})
	if !l.AllowKey([]byte("a")).Allowed || l.AllowKey([]byte("a")).Allowed {
		t.Fatal("key a: want one request through")
	}
	if !l.AllowKey([]byte("b")).Allowed {
		t.Fatal("key b shares a's bucket")
	}
}

// TestMemoryBound sprays a million distinct keys: the limiter keeps at
// most MaxKeys buckets, and the keys it keeps are limited as before.
func TestMemoryBound(t *testing.T) {
	const maxKeys = 4096
	l := New(Config{MaxTokens: 1, TokensPerFill: 1, FillInterval: time.Hour, MaxKeys: maxKeys})
	var key [8]byte
	for i := 0; i < 1_000_000; i++ {
		binary.LittleEndian.PutUint64(key[:], uint64(i))
		l.AllowKey(key[:])
	}
	if n := l.Keys(); n > l.MaxKeys() || l.MaxKeys() != maxKeys {
		t.Fatalf("%d buckets after 1M keys, bound %d", n, l.MaxKeys())
	}
	// The last key sprayed is still known and limited.
	if l.AllowKey(key[:]).Allowed {
		t.Error("the last key's empty bucket was forgotten")
	}
}

func TestNoAllocationForAKnownKey(t *testing.T) {
	l := New(Config{MaxTokens: 1 << 30, TokensPerFill: 1 << 30, FillInterval: time.Second, MaxKeys: 1024})
	key := []byte("203.0.113.7")
	l.AllowKey(key)
	if a := testing.AllocsPerRun(1000, func() { l.AllowKey(key) }); a != 0 {
		t.Errorf("%v allocations per request for a known key", a)
	}
	if a := testing.AllocsPerRun(1000, func() { l.Allow() }); a != 0 {
		t.Errorf("%v allocations per request without a key", a)
	}
}

// TestHammer lets many goroutines take tokens from one bucket at once:
// exactly MaxTokens get through.
func TestHammer(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		l := New(Config{MaxTokens: 1000, TokensPerFill: 1, FillInterval: time.Hour, MaxKeys: 16})
		var mu sync.Mutex
		allowed := 0
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := 0
				for i := 0; i < 500; i++ {
					var d Decision
					if keyed {
						d = l.AllowKey([]byte("k"))
					} else {
						d = l.Allow()
					}
					if d.Allowed {
						n++
					}
				}
				mu.Lock()
				allowed += n
				mu.Unlock()
			}()
		}
		wg.Wait()
		if allowed != 1000 {
			t.Errorf("keyed %v: %d allowed, want 1000", keyed, allowed)
		}
	}
}

func BenchmarkAllowKey(b *testing.B) {
	l := New(Config{MaxTokens: 1 << 30, TokensPerFill: 1 << 30, FillInterval: time.Second, MaxKeys: 65536})
	key := []byte("203.0.113.7")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.AllowKey(key)
		}
	})
}

func BenchmarkAllow(b *testing.B) {
	l := New(Config{MaxTokens: 1 << 30, TokensPerFill: 1 << 30, FillInterval: time.Second})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow()
		}
	})
}
