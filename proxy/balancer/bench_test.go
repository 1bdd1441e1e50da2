package balancer

import (
	"fmt"
	"testing"
)

// benchCases are the balancers the benchmarks pick from.
func benchCases(b *testing.B, f func(b *testing.B, bal Balancer)) {
	for _, p := range policies {
		for _, n := range []int{10, 100} {
			for _, weighted := range []bool{false, true} {
				weights := equalWeights(n)
				name := fmt.Sprintf("%s/hosts=%d", p, n)
				if weighted {
					for i := range weights {
						weights[i] = 1 + i%7
					}
					name += "/weighted"
				}
				b.Run(name, func(b *testing.B) {
					f(b, mustNew(b, p, makeHosts(weights...), Options{}))
				})
			}
		}
	}
}

func BenchmarkPick(b *testing.B) {
	benchCases(b, func(b *testing.B, bal Balancer) {
		b.ReportAllocs()
		var h uint64
		for b.Loop() {
			h += 0x9e3779b97f4a7c15
			bal.Pick(h)
		}
	})
}

func BenchmarkPickParallel(b *testing.B) {
	benchCases(b, func(b *testing.B, bal Balancer) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var h uint64
			for pb.Next() {
				h += 0x9e3779b97f4a7c15
				bal.Pick(h)
			}
		})
	})
}

func BenchmarkHashKey(b *testing.B) {
	key := []byte("session=4f1c2a9b")
	b.ReportAllocs()
	for b.Loop() {
		HashKey(key)
	}
}

// BenchmarkNew measures building, which happens off the request path on
// every change of a cluster's hosts.
func BenchmarkNew(b *testing.B) {
	for _, p := range policies {
		for _, n := range []int{10, 100} {
			weights := make([]int, n)
			for i := range weights {
				weights[i] = 1 + i%7
			}
			hosts := makeHosts(weights...)
			b.Run(fmt.Sprintf("%s/hosts=%d/weighted", p, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := New(p, hosts, Options{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
