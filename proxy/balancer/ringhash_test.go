package balancer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/wasmgate/wasmgate/config"
)

// TestRingHashPick checks the bucketed search against a plain binary
// search over the whole ring, at random hashes, at every point and either
// side of it, and at the ends of the hash space.
func TestRingHashPick(t *testing.T) {
	tests := []struct {
		weights  []int
		ringSize int
	}{
		{equalWeights(2), 0},
		{equalWeights(3), 7},
		{[]int{1, 2, 3}, 0},
		{equalWeights(40), 0},
		{[]int{10000, 1}, 100},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/%d", tt.weights, tt.ringSize), func(t *testing.T) {
			b := mustNew(t, config.LBRingHash, makeHosts(tt.weights...), Options{RingSize: tt.ringSize}).(*ringHash)
			want := func(h uint64) int {
				i := sort.Search(len(b.hashes), func(i int) bool { return b.hashes[i] >= h })
				return int(b.owners[i%len(b.hashes)])
			}
			hashes := []uint64{0, 1, math.MaxUint64, math.MaxUint64 - 1}
			for _, p := range b.hashes {
				hashes = append(hashes, p, p-1, p+1)
			}
			r := rand.New(rand.NewPCG(5, 6))
			for range 10000 {
				hashes = append(hashes, r.Uint64())
			}
			for _, h := range hashes {
				if got, want := b.Pick(h), want(h); got != want {
					t.Fatalf("Pick(%#x) = %d, want %d", h, got, want)
				}
			}
		})
	}
}

func TestRingCounts(t *testing.T) {
	tests := []struct {
		weights  []int
		ringSize int
		want     []int
	}{
		{equalWeights(4), 0, []int{1024, 1024, 1024, 1024}},
		{equalWeights(4), 100, []int{25, 25, 25, 25}},
		{[]int{1, 3}, 1000, []int{250, 750}},
		{[]int{1, 2}, 0, []int{683, 1365}},
		// Every host keeps a point, however light.
		{[]int{10000, 1}, 100, []int{100, 1}},
		{equalWeights(2), MaxRingSize * 2, []int{MaxRingSize / 2, MaxRingSize / 2}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/%d", tt.weights, tt.ringSize), func(t *testing.T) {
			if got := ringCounts(tt.weights, tt.ringSize); !slices.Equal(got, tt.want) {
				t.Errorf("points %v, want %v", got, tt.want)
			}
		})
	}
}
