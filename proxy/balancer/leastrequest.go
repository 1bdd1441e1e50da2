package balancer

// leastRequest is the power of two choices: of two distinct hosts drawn at
// random, the one with fewer requests in flight.
type leastRequest struct {
	hosts []Host
	// weights is nil when all weights are equal; otherwise the load of a
	// host is (active+1)/weight, compared by cross-multiplying.
	weights []int64
}

var _ Balancer = (*leastRequest)(nil)

// newLeastRequest builds least_request over at least two hosts.
func newLeastRequest(hosts []Host, weights []int) Balancer {
	b := &leastRequest{hosts: append([]Host(nil), hosts...)}
	if !uniform(weights) {
		b.weights = make([]int64, len(weights))
		for i, w := range weights {
			b.weights[i] = int64(w)
		}
	}
	return b
}

func (b *leastRequest) Pick(uint64) int {
	n := len(b.hosts)
	i := randIndex(n)
	j := randIndex(n - 1)
	if j >= i {
		j++
	}
	ai := max(b.hosts[i].ActiveRequests(), 0)
	aj := max(b.hosts[j].ActiveRequests(), 0)
	if b.weights == nil {
		if aj < ai {
			return j
		}
		return i
	}
	// (aj+1)/wj < (ai+1)/wi; both sides stay far below 2^63 for weights
	// up to MaxWeight unless a count passes 2^49.
	if (aj+1)*b.weights[i] < (ai+1)*b.weights[j] {
		return j
	}
	return i
}
