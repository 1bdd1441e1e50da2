package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/cespare/xxhash/v2"

	"github.com/wasmgate/wasmgate/config"
)

// MaxWeight is the largest weight a host may have.
const MaxWeight = 10000

// ErrNoHosts is returned by New for an empty set of hosts. A cluster with
// no usable host has nothing to balance; the caller answers such requests
// itself (typically 503) rather than calling Pick. A Balancer from New
// therefore has at least one host and Pick never returns -1; the -1 of
// the interface is for Balancers built elsewhere.
var ErrNoHosts = errors.New("no hosts")

// ErrUnknownPolicy is returned by New for a policy it does not know.
var ErrUnknownPolicy = errors.New("unknown load-balancing policy")

// New builds a Balancer of the named policy over hosts: one of
// config.LBRoundRobin (also the empty string), config.LBLeastRequest,
// config.LBRandom, config.LBRingHash and config.LBMaglev.
//
// New copies the slice but retains the Hosts: least_request calls
// ActiveRequests on every Pick, the others only read Weight and Key here.
// A weight of zero counts as 1; a negative weight or one above MaxWeight
// is an error. Errors wrap ErrUnknownPolicy or ErrNoHosts where they apply.
//
// Building costs time and memory proportional to the hosts (and, for
// ring_hash, the ring size; for maglev, a 65537-entry table), so a caller
// builds once per change of the host set and shares the result.
//
// The hash-based policies depend only on the hosts' keys and weights, not
// on their order in the slice: the same set in another order maps every
// hash to the same host.
func New(policy string, hosts []Host, opts Options) (Balancer, error) {
	switch policy {
	case "", config.LBRoundRobin, config.LBLeastRequest, config.LBRandom,
		config.LBRingHash, config.LBMaglev:
	default:
		return nil, fmt.Errorf("balancer: policy %q: %w", policy, ErrUnknownPolicy)
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("balancer: policy %q: %w", policy, ErrNoHosts)
	}
	weights := make([]int, len(hosts))
	for i, h := range hosts {
		if h == nil {
			return nil, fmt.Errorf("balancer: host %d: nil", i)
		}
		w := h.Weight()
		switch {
		case w == 0:
			w = 1
		case w < 0 || w > MaxWeight:
			return nil, fmt.Errorf("balancer: host %d (%s): weight %d out of range 1..%d", i, h.Key(), w, MaxWeight)
		}
		weights[i] = w
	}
	if opts.RingSize < 0 {
		return nil, fmt.Errorf("balancer: ring size %d is negative", opts.RingSize)
	}

	if len(hosts) == 1 {
		return single{}, nil
	}
	switch policy {
	case config.LBLeastRequest:
		return newLeastRequest(hosts, weights), nil
	case config.LBRandom:
		return newRandom(weights), nil
	case config.LBRingHash:
		return newRingHash(hosts, weights, opts.RingSize), nil
	case config.LBMaglev:
		return newMaglev(hosts, weights)
	default:
		return newRoundRobin(weights), nil
	}
}

// HashKey hashes a request attribute (a header value, a cookie, a source
// address) into the hash that Pick takes for ring_hash and maglev. It is
// xxhash64, and allocates nothing.
func HashKey(b []byte) uint64 {
	return xxhash.Sum64(b)
}

// single is any policy over one host.
type single struct{}

var _ Balancer = single{}

func (single) Pick(uint64) int { return 0 }

// uniform reports whether every weight is the same.
func uniform(weights []int) bool {
	for _, w := range weights[1:] {
		if w != weights[0] {
			return false
		}
	}
	return true
}

// randIndex returns a random index below n; it draws on the runtime's
// per-thread generator, so it takes no lock and allocates nothing.
func randIndex(n int) int { return rand.IntN(n) }
