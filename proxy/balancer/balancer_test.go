package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wasmgate/wasmgate/config"
)

type testHost struct {
	key    string
	weight int
	active atomic.Int64
}

func (h *testHost) Weight() int           { return h.weight }
func (h *testHost) ActiveRequests() int64 { return h.active.Load() }
func (h *testHost) Key() string           { return h.key }

var _ Host = (*testHost)(nil)

// makeHosts returns hosts 10.0.0.1:80, 10.0.0.2:80, ... of the given weights.
func makeHosts(weights ...int) []Host {
	hosts := make([]Host, len(weights))
	for i, w := range weights {
		hosts[i] = &testHost{key: fmt.Sprintf("10.0.0.%d:80", i+1), weight: w}
	}
	return hosts
}

// equalWeights returns n weights of 1.
func equalWeights(n int) []int {
	w := make([]int, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

var policies = []string{
	config.LBRoundRobin,
	config.LBLeastRequest,
	config.LBRandom,
	config.LBRingHash,
	config.LBMaglev,
}

func mustNew(t testing.TB, policy string, hosts []Host, opts Options) Balancer {
	t.Helper()
	b, err := New(policy, hosts, opts)
	if err != nil {
		t.Fatalf("New(%q): %v", policy, err)
	}
	return b
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name    string
		policy  string
		hosts   []Host
		opts    Options
		wantIs  error
		wantErr string
	}{
		{name: "unknown policy", policy: "least_conn", hosts: makeHosts(1), wantIs: ErrUnknownPolicy,
			wantErr: `balancer: policy "least_conn": unknown load-balancing policy`},
		{name: "unknown policy without hosts", policy: "weighted", wantIs: ErrUnknownPolicy},
		{name: "negative weight", policy: config.LBRandom, hosts: makeHosts(1, -1),
			wantErr: "balancer: host 1 (10.0.0.2:80): weight -1 out of range 1..10000"},
		{name: "weight too large", policy: config.LBRoundRobin, hosts: makeHosts(10001),
			wantErr: "balancer: host 0 (10.0.0.1:80): weight 10001 out of range 1..10000"},
		{name: "nil host", policy: config.LBMaglev, hosts: []Host{makeHosts(1)[0], nil},
			wantErr: "balancer: host 1: nil"},
		{name: "negative ring size", policy: config.LBRingHash, hosts: makeHosts(1, 1), opts: Options{RingSize: -1},
			wantErr: "balancer: ring size -1 is negative"},
	}
	for _, p := range append(policies, "") {
		tests = append(tests, struct {
			name    string
			policy  string
			hosts   []Host
			opts    Options
			wantIs  error
			wantErr string
		}{name: "no hosts " + p, policy: p, hosts: []Host{}, wantIs: ErrNoHosts})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.policy, tt.hosts, tt.opts)
			if err == nil {
				t.Fatalf("New = %T, want an error", b)
			}
			if b != nil {
				t.Errorf("New returned %T along with an error", b)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q is not %q", err, tt.wantIs)
			}
			if tt.wantErr != "" && err.Error() != tt.wantErr {
				t.Errorf("error %q, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestEmptyPolicyIsRoundRobin(t *testing.T) {
	b := mustNew(t, "", makeHosts(1, 1, 1), Options{})
	if _, ok := b.(*roundRobin); !ok {
		t.Fatalf("New(\"\") = %T, want *roundRobin", b)
	}
}

func TestZeroWeightCountsAsOne(t *testing.T) {
	b := mustNew(t, config.LBRandom, makeHosts(0, 1), Options{})
	if _, ok := b.(uniformRandom); !ok {
		t.Fatalf("weights 0,1: %T, want uniformRandom", b)
	}
}

func TestOneHost(t *testing.T) {
	for _, p := range policies {
		t.Run(p, func(t *testing.T) {
			b := mustNew(t, p, makeHosts(7), Options{})
			for i := range 100 {
				if got := b.Pick(rand.Uint64()); got != 0 {
					t.Fatalf("pick %d = %d, want 0", i, got)
				}
			}
		})
	}
}

// TestConcurrentPick hammers every policy from many goroutines while the
// hosts' request counts change underneath, as they do in a proxy.
func TestConcurrentPick(t *testing.T) {
	for _, p := range policies {
		for _, weights := range [][]int{equalWeights(5), {1, 2, 3, 4, 5}} {
			t.Run(fmt.Sprintf("%s/%v", p, weights), func(t *testing.T) {
				hosts := makeHosts(weights...)
				b := mustNew(t, p, hosts, Options{})
				const goroutines, picks = 8, 2000
				var wg sync.WaitGroup
				var bad atomic.Int64
				counts := make([]atomic.Int64, len(hosts))
				for range goroutines {
					wg.Go(func() {
						for range picks {
							i := b.Pick(rand.Uint64())
							if i < 0 || i >= len(hosts) {
								bad.Add(1)
								continue
							}
							counts[i].Add(1)
							h := hosts[i].(*testHost)
							h.active.Add(1)
							h.active.Add(-1)
						}
					})
				}
				wg.Wait()
				if n := bad.Load(); n > 0 {
					t.Fatalf("%d picks out of range", n)
				}
				var total int64
				for i := range counts {
					total += counts[i].Load()
				}
				if total != goroutines*picks {
					t.Fatalf("%d picks counted, want %d", total, goroutines*picks)
				}
			})
		}
	}
}

// TestHashPoliciesIgnoreOrder checks that ring_hash and maglev send a hash
// to the same host whatever the order of the slice.
func TestHashPoliciesIgnoreOrder(t *testing.T) {
	for _, p := range []string{config.LBRingHash, config.LBMaglev} {
		t.Run(p, func(t *testing.T) {
			hosts := makeHosts(1, 2, 3, 4, 5, 6)
			shuffled := append([]Host(nil), hosts...)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) {
				shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
			})
			a := mustNew(t, p, hosts, Options{})
			b := mustNew(t, p, shuffled, Options{})
			for i := range 10000 {
				h := HashKey(fmt.Appendf(nil, "key-%d", i))
				if ka, kb := hosts[a.Pick(h)].Key(), shuffled[b.Pick(h)].Key(); ka != kb {
					t.Fatalf("hash of key-%d: %s in one order, %s in another", i, ka, kb)
				}
			}
		})
	}
}

func TestHashKey(t *testing.T) {
	// xxhash64 with seed 0 of "" and of "abc", as published.
	tests := []struct {
		in   string
		want uint64
	}{
		{"", 0xef46db3751d8e999},
		{"abc", 0x44bc2cf5ad770999},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := HashKey([]byte(tt.in)); got != tt.want {
				t.Errorf("HashKey(%q) = %#x, want %#x", tt.in, got, tt.want)
			}
		})
	}
}
