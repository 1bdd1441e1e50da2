//go:build !race

package balancer

import (
	"fmt"
	"testing"
)

func TestPickAllocatesNothing(t *testing.T) {
	for _, p := range policies {
		for _, weights := range [][]int{{1}, equalWeights(10), {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}} {
			t.Run(fmt.Sprintf("%s/%v", p, weights), func(t *testing.T) {
				b := mustNew(t, p, makeHosts(weights...), Options{})
				var h uint64
				if n := testing.AllocsPerRun(1000, func() {
					h += 0x9e3779b97f4a7c15
					b.Pick(h)
				}); n != 0 {
					t.Errorf("Pick: %v allocations, want 0", n)
				}
			})
		}
	}
}

func TestHashKeyAllocatesNothing(t *testing.T) {
	key := []byte("session=4f1c2a9b")
	if n := testing.AllocsPerRun(1000, func() { HashKey(key) }); n != 0 {
		t.Errorf("HashKey: %v allocations, want 0", n)
	}
}
