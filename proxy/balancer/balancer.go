// Package balancer picks an upstream endpoint for a request. A Balancer is
// built once for a set of hosts (off the request path, on every change of
// the set or of host health) and is then immutable: Pick is lock-free,
// safe for concurrent use, and allocates nothing.
package balancer

// Host is what a balancer needs to know of an endpoint.
type Host interface {
	// Weight is the configured weight, 1 to 10000.
	Weight() int
	// ActiveRequests is the number of requests in flight to the host. It
	// is read without synchronisation beyond an atomic load.
	ActiveRequests() int64
	// Key identifies the host for consistent hashing (its address).
	Key() string
}

// Balancer picks among the hosts it was built with.
type Balancer interface {
	// Pick returns the index of the chosen host in the slice the balancer
	// was built with, or -1 when there is none. hash is the request's hash
	// for ring_hash and maglev and is ignored by the other policies.
	Pick(hash uint64) int
}

// Options tune a balancer.
type Options struct {
	// RingSize is the number of points on a ring_hash ring; zero means
	// 1024 per host, at most 8M.
	RingSize int
}
