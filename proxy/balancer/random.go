package balancer

import "math/rand/v2"

// uniformRandom picks any host with equal probability.
type uniformRandom struct{ n int }

var _ Balancer = uniformRandom{}

// weightedRandom picks a host with probability proportional to its weight.
type weightedRandom struct {
	// cum[i] is the sum of the weights of hosts 0 to i.
	cum []uint64
}

var _ Balancer = (*weightedRandom)(nil)

// newRandom builds random over at least two hosts.
func newRandom(weights []int) Balancer {
	if uniform(weights) {
		return uniformRandom{n: len(weights)}
	}
	b := &weightedRandom{cum: make([]uint64, len(weights))}
	var sum uint64
	for i, w := range weights {
		sum += uint64(w)
		b.cum[i] = sum
	}
	return b
}

func (b uniformRandom) Pick(uint64) int { return randIndex(b.n) }

func (b *weightedRandom) Pick(uint64) int {
	r := rand.Uint64N(b.cum[len(b.cum)-1])
	// The first i with r < cum[i].
	lo, hi := 0, len(b.cum)-1
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r < b.cum[m] {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}
