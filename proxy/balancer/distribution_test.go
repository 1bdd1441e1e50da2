package balancer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/wasmgate/wasmgate/config"
)

// shares returns the fraction of picks each host received.
func shares(b Balancer, n, picks int, hash func(i int) uint64) []float64 {
	counts := make([]int, n)
	for i := range picks {
		counts[b.Pick(hash(i))]++
	}
	s := make([]float64, n)
	for i, c := range counts {
		s[i] = float64(c) / float64(picks)
	}
	return s
}

// keyHash is the hash of the i-th of a population of request keys.
func keyHash(i int) uint64 { return HashKey(fmt.Appendf(nil, "user-%d", i)) }

// TestWeightedDistribution checks that every policy but least_request
// gives each host its weight's share of picks, to within tol of that share
// (relative). The tolerances are the policies' own: round robin is exact
// to a period, random is within a few standard deviations of 100k draws,
// maglev's table follows the weights to a few slots in 65537, and a ring's
// shares vary with where 1024 random points per host happen to fall.
func TestWeightedDistribution(t *testing.T) {
	const picks = 100_000
	weightSets := [][]int{
		equalWeights(4),
		{1, 2, 3, 4},
		{5, 1, 1},
		{100, 10, 1},
		{10000, 3333, 1, 7},
	}
	tests := []struct {
		policy string
		tol    float64
		hash   func(int) uint64
	}{
		{config.LBRoundRobin, 0.005, func(int) uint64 { return 0 }},
		{config.LBRandom, 0.05, func(int) uint64 { return 0 }},
		{config.LBRingHash, 0.15, keyHash},
		{config.LBMaglev, 0.03, keyHash},
	}
	for _, tt := range tests {
		for _, weights := range weightSets {
			t.Run(fmt.Sprintf("%s/%v", tt.policy, weights), func(t *testing.T) {
				b := mustNew(t, tt.policy, makeHosts(weights...), Options{})
				got := shares(b, len(weights), picks, tt.hash)
				var total int
				for _, w := range weights {
					total += w
				}
				for i, w := range weights {
					want := float64(w) / float64(total)
					// Shares under 1% are checked against an absolute
					// bound: 100k picks resolve them only so finely.
					if dev := math.Abs(got[i]-want) / want; want >= 0.01 && dev > tt.tol {
						t.Errorf("host %d (weight %d): share %.4f, want %.4f ±%.1f%%", i, w, got[i], want, tt.tol*100)
					} else if want < 0.01 && math.Abs(got[i]-want) > 0.002 {
						t.Errorf("host %d (weight %d): share %.4f, want %.4f ±0.002", i, w, got[i], want)
					}
				}
				t.Logf("shares %.4f", got)
			})
		}
	}
}

// TestLeastRequestPrefersLessLoaded checks the power of two choices
// against its exact law: with n hosts of equal weight ranked by load, the
// k-th least loaded (from 0) wins exactly the pairs it forms with the
// n-1-k more loaded, so its share is (n-1-k)/C(n,2).
func TestLeastRequestPrefersLessLoaded(t *testing.T) {
	const picks = 100_000
	tests := []struct {
		name    string
		weights []int
		active  []int64
		want    []float64
	}{
		{"four by load", equalWeights(4), []int64{0, 10, 20, 30}, []float64{3. / 6, 2. / 6, 1. / 6, 0}},
		{"four shuffled", equalWeights(4), []int64{20, 0, 30, 10}, []float64{1. / 6, 3. / 6, 0, 2. / 6}},
		{"two", equalWeights(2), []int64{5, 4}, []float64{0, 1}},
		// Weighted: the load compared is (active+1)/weight.
		{"weighted idle", []int{1, 3}, []int64{0, 0}, []float64{0, 1}},
		{"weighted heavier busier", []int{1, 3}, []int64{3, 6}, []float64{0, 1}},
		{"weighted heavier too busy", []int{1, 2}, []int64{1, 5}, []float64{1, 0}},
		{"weighted three", []int{1, 2, 4}, []int64{0, 2, 8}, []float64{2. / 3, 1. / 3, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts := makeHosts(tt.weights...)
			for i, a := range tt.active {
				hosts[i].(*testHost).active.Store(a)
			}
			b := mustNew(t, config.LBLeastRequest, hosts, Options{})
			got := shares(b, len(hosts), picks, func(int) uint64 { return 0 })
			for i := range got {
				if math.Abs(got[i]-tt.want[i]) > 0.01 {
					t.Errorf("host %d (active %d, weight %d): share %.4f, want %.4f", i, tt.active[i], tt.weights[i], got[i], tt.want[i])
				}
			}
			t.Logf("shares %.4f", got)
		})
	}
}

// TestLeastRequestTies checks that among equally loaded hosts the choice
// is uniform.
func TestLeastRequestTies(t *testing.T) {
	b := mustNew(t, config.LBLeastRequest, makeHosts(equalWeights(5)...), Options{})
	for i, s := range shares(b, 5, 100_000, func(int) uint64 { return 0 }) {
		if math.Abs(s-0.2) > 0.01 {
			t.Errorf("host %d: share %.4f, want 0.2", i, s)
		}
	}
}

func TestSmoothSequence(t *testing.T) {
	tests := []struct {
		weights []int
		want    []int32
	}{
		// nginx's own example: a, a, b, a, c, a, a.
		{[]int{5, 1, 1}, []int32{0, 0, 1, 0, 2, 0, 0}},
		{[]int{10, 20, 30}, []int32{2, 1, 0, 2, 1, 2}},
		{[]int{2, 1}, []int32{0, 1, 0}},
		{[]int{1, 1, 2}, []int32{2, 0, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			if got := smoothSequence(tt.weights); !slices.Equal(got, tt.want) {
				t.Errorf("sequence %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSmoothSequenceIsSmooth checks that in every window of the cyclic
// sequence each host is picked within 2 of its exact share of the window.
// That bounds a host of weight w of a total W to runs shorter than
// 2W/(W-w): 13 for 50 among nine 1s, where plain weighted round robin runs
// 50 in a row.
func TestSmoothSequenceIsSmooth(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	weightSets := [][]int{
		{5, 1, 1},
		{1, 2, 3, 4},
		{100, 1},
		{7, 11, 13},
		{1, 1, 1, 1, 1, 1, 1, 1, 1, 50},
	}
	random := make([]int, 12)
	for i := range random {
		random[i] = 1 + r.IntN(40)
	}
	weightSets = append(weightSets, random)
	for _, weights := range weightSets {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			seq := smoothSequence(weights)
			var total int
			for _, w := range weights {
				total += w
			}
			worst := 0.0
			for host, w := range weights {
				for start := range seq {
					count := 0
					for l := 1; l <= len(seq); l++ {
						if seq[(start+l-1)%len(seq)] == int32(host) {
							count++
						}
						dev := math.Abs(float64(count) - float64(l*w)/float64(total))
						worst = max(worst, dev)
						if dev >= 2 {
							t.Fatalf("host %d picked %d times in the %d turns from %d, want about %.2f",
								host, count, l, start, float64(l*w)/float64(total))
						}
					}
				}
			}
			longest, run := 0, 0
			for k := 1; k < 2*len(seq); k++ {
				if seq[k%len(seq)] == seq[(k-1)%len(seq)] {
					run++
				} else {
					run = 0
				}
				longest = max(longest, run+1)
			}
			t.Logf("period %d, largest deviation from the exact share in any window %.2f, longest run %d", len(seq), worst, longest)
		})
	}
}

// TestSmoothSequenceBound checks that weights whose period would exceed
// maxSequence are scaled down to it with their proportions kept.
func TestSmoothSequenceBound(t *testing.T) {
	weights := make([]int, 20)
	for i := range weights {
		weights[i] = 10000 - 7*i
	}
	weights[19] = 1 // sum 188804, greatest common divisor 1
	seq := smoothSequence(weights)
	if len(seq) > maxSequence {
		t.Fatalf("period %d, want at most %d", len(seq), maxSequence)
	}
	counts := make([]int, len(weights))
	for _, i := range seq {
		counts[i]++
	}
	var total int
	for _, w := range weights {
		total += w
	}
	for i, w := range weights {
		want := float64(len(seq)) * float64(w) / float64(total)
		if math.Abs(float64(counts[i])-want) > 1 {
			t.Errorf("host %d (weight %d): %d turns of %d, want %.1f", i, w, counts[i], len(seq), want)
		}
	}
	t.Logf("period %d for a weight sum of %d", len(seq), total)
}

// TestRoundRobinCycles checks that consecutive picks follow the sequence.
func TestRoundRobinCycles(t *testing.T) {
	tests := []struct {
		weights []int
		period  []int32
	}{
		{equalWeights(3), []int32{0, 1, 2}},
		{[]int{5, 1, 1}, []int32{0, 0, 1, 0, 2, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			b := mustNew(t, config.LBRoundRobin, makeHosts(tt.weights...), Options{})
			got := make([]int32, 3*len(tt.period))
			for i := range got {
				got[i] = int32(b.Pick(0))
			}
			// The counter starts at a random place: find it.
			for off := range tt.period {
				match := true
				for i, g := range got {
					if tt.period[(off+i)%len(tt.period)] != g {
						match = false
						break
					}
				}
				if match {
					return
				}
			}
			t.Errorf("picks %v do not follow %v", got, tt.period)
		})
	}
}
