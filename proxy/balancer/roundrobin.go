package balancer

import (
	"math"
	"sync/atomic"
)

// maxSequence bounds the precomputed smooth weighted round-robin sequence.
const maxSequence = 1 << 16

// roundRobin cycles through hosts of equal weight.
type roundRobin struct {
	n    uint64
	next atomic.Uint64
}

var _ Balancer = (*roundRobin)(nil)

// weightedRoundRobin replays a precomputed smooth weighted round-robin
// sequence.
type weightedRoundRobin struct {
	seq  []int32
	next atomic.Uint64
}

var _ Balancer = (*weightedRoundRobin)(nil)

// newRoundRobin builds round_robin over at least two hosts. The counter
// starts at a random place so that a rebuild (which happens on every
// change of host health) does not send the next request to host 0 on
// every proxy at once.
func newRoundRobin(weights []int) Balancer {
	if uniform(weights) {
		b := &roundRobin{n: uint64(len(weights))}
		b.next.Store(uint64(randIndex(len(weights))))
		return b
	}
	seq := smoothSequence(weights)
	b := &weightedRoundRobin{seq: seq}
	b.next.Store(uint64(randIndex(len(seq))))
	return b
}

func (b *roundRobin) Pick(uint64) int {
	return int((b.next.Add(1) - 1) % b.n)
}

func (b *weightedRoundRobin) Pick(uint64) int {
	return int(b.seq[(b.next.Add(1)-1)%uint64(len(b.seq))])
}

// smoothSequence returns one period of nginx's smooth weighted round robin
// over weights: each turn every host's current weight grows by its weight,
// the host with the largest current weight (the first on a tie) is chosen
// and its current weight drops by the total. The period is the sum of the
// weights once divided by their greatest common divisor; when that exceeds
// maxSequence the weights are scaled down in proportion first (no host
// below 1), which keeps the shares within a host's rounding of exact.
func smoothSequence(weights []int) []int32 {
	w := make([]int64, len(weights))
	g := 0
	for _, x := range weights {
		g = gcd(g, x)
	}
	var total int64
	for i, x := range weights {
		w[i] = int64(x / g)
		total += w[i]
	}
	if limit := max(maxSequence, int64(len(w))); total > limit {
		// Leave room for the hosts rounded up to 1.
		scale := float64(limit-int64(len(w))) / float64(total)
		g, total = 0, 0
		for i := range w {
			w[i] = max(1, int64(math.Round(float64(w[i])*scale)))
			g = gcd(g, int(w[i]))
		}
		for i := range w {
			w[i] /= int64(g)
			total += w[i]
		}
	}

	seq := make([]int32, total)
	cur := make([]int64, len(w))
	for k := range seq {
		best := 0
		for i, x := range w {
			cur[i] += x
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		seq[k] = int32(best)
	}
	return seq
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
