package cluster

import (
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/metrics"
)

// Breaker names one circuit breaker of a cluster.
type Breaker uint8

const (
	BreakerConnections Breaker = iota
	BreakerPending
	BreakerRequests
	BreakerRetries
)

var breakerNames = [...]string{"max_connections", "max_pending_requests", "max_requests", "max_retries"}

func (b Breaker) String() string { return breakerNames[b] }

// OverflowError is returned when a circuit breaker refuses a request. The
// request never reached an endpoint.
type OverflowError struct{ Breaker Breaker }

func (e *OverflowError) Error() string {
	return "circuit breaker " + e.Breaker.String() + " overflowed"
}

// The errors are preallocated so that an overflow allocates nothing.
var overflows = [...]*OverflowError{{BreakerConnections}, {BreakerPending}, {BreakerRequests}, {BreakerRetries}}

// ErrOverflow matches every OverflowError with errors.Is.
var ErrOverflow = errors.New("circuit breaker overflowed")

// Is implements errors.Is against ErrOverflow.
func (e *OverflowError) Is(target error) bool { return target == ErrOverflow }

// limits are a cluster's circuit breaker thresholds. A zero limit is no
// limit.
type limits struct {
	maxConns, maxPending, maxRequests, maxRetries int64
	// budgetPercent replaces maxRetries when above 0.
	budgetPercent float64
	minRetry      int64
}

// defaultLimits bound only retries, as Envoy's default max_retries does.
var defaultLimits = &limits{maxRetries: 3}

func newLimits(cb *config.CircuitBreakers) *limits {
	if cb == nil {
		return defaultLimits
	}
	l := &limits{
		maxConns: int64(cb.MaxConnections), maxPending: int64(cb.MaxPendingRequests),
		maxRequests: int64(cb.MaxRequests), maxRetries: int64(cb.MaxRetries),
	}
	if rb := cb.RetryBudget; rb != nil {
		l.budgetPercent, l.minRetry = rb.BudgetPercent, int64(rb.MinRetryConcurrency)
	}
	return l
}

// clusterState is what a cluster name keeps across reloads: the counters
// its circuit breakers compare with their limits, so that a reload does
// not let twice the traffic through while the old snapshot drains.
type clusterState struct {
	name   string
	limits atomic.Pointer[limits]
	stats  *metrics.ClusterStats

	active  atomic.Int64 // requests in flight, retries included
	pending atomic.Int64 // requests waiting for a connection
	retries atomic.Int64 // retries in flight
	conns   atomic.Int64 // open connections
}

func (cs *clusterState) overflow(b Breaker) error {
	cs.stats.Overflow(int(b))
	return overflows[b]
}

// take adds one to n unless that passes max (0 is no limit).
func take(n *atomic.Int64, max int64) bool {
	if v := n.Add(1); max > 0 && v > max {
		n.Add(-1)
		return false
	}
	return true
}

// acquireRequest counts a request in flight, or refuses it.
func (cs *clusterState) acquireRequest() error {
	if !take(&cs.active, cs.limits.Load().maxRequests) {
		return cs.overflow(BreakerRequests)
	}
	return nil
}

// acquireRetry counts a retry in flight, or refuses it: past max_retries,
// or, with a retry budget, past budget_percent of the requests in flight
// (and at least min_retry_concurrency).
func (cs *clusterState) acquireRetry() error {
	l := cs.limits.Load()
	max := l.maxRetries
	if l.budgetPercent > 0 {
		max = int64(math.Floor(float64(cs.active.Load()) * l.budgetPercent / 100))
		if max < l.minRetry {
			max = l.minRetry
		}
	}
	if !take(&cs.retries, max) {
		if l.budgetPercent > 0 {
			cs.stats.Retry(metrics.RetryBudgetExhausted)
		} else {
			cs.stats.Retry(metrics.RetryOverflow)
		}
		return cs.overflow(BreakerRetries)
	}
	return nil
}

func (cs *clusterState) acquirePending() error {
	if !take(&cs.pending, cs.limits.Load().maxPending) {
		return cs.overflow(BreakerPending)
	}
	return nil
}

// dialer wraps a pool's dial with the max_connections breaker: past it,
// the dial fails with an OverflowError and no connection is attempted.
func (cs *clusterState) dialer(dial func(string) (net.Conn, error)) func(string) (net.Conn, error) {
	return func(addr string) (net.Conn, error) {
		if !take(&cs.conns, cs.limits.Load().maxConns) {
			return nil, cs.overflow(BreakerConnections)
		}
		c, err := dial(addr)
		if err != nil {
			cs.conns.Add(-1)
			return nil, err
		}
		return &countedConn{Conn: c, n: &cs.conns}, nil
	}
}

// countedConn gives back its place under max_connections when closed.
type countedConn struct {
	net.Conn
	n    *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.n.Add(-1) })
	return c.Conn.Close()
}

// Guard is a request admitted by a cluster's max_requests breaker. The
// caller must call Release once the exchange is over, body included.
type Guard struct{ cs *clusterState }

// Release ends the request; it is a no-op on a zero Guard.
func (g *Guard) Release() {
	if g.cs != nil {
		g.cs.active.Add(-1)
		g.cs = nil
	}
}

// Admit counts a request against the cluster's max_requests breaker. On
// overflow it returns an OverflowError and the request must not be sent.
func (c *Cluster) Admit(g *Guard) error {
	if err := c.state.acquireRequest(); err != nil {
		return err
	}
	g.cs = c.state
	return nil
}

// AcquireRetry asks the max_retries breaker (or the retry budget) for a
// retry. On success the caller must call ReleaseRetry once the retry's
// attempt is over.
func (c *Cluster) AcquireRetry() error { return c.state.acquireRetry() }

// ReleaseRetry ends a retry admitted by AcquireRetry.
func (c *Cluster) ReleaseRetry() { c.state.retries.Add(-1) }

// Stats returns the cluster's metrics; nil-safe methods.
func (c *Cluster) Stats() *metrics.ClusterStats { return c.state.stats }

// BreakerCounts are the counters the circuit breakers compare with their
// limits, for /clusters.
type BreakerCounts struct {
	ActiveRequests  int64 `json:"active_requests"`
	PendingRequests int64 `json:"pending_requests"`
	ActiveRetries   int64 `json:"active_retries"`
	Connections     int64 `json:"connections"`
}

// Breakers returns the cluster's breaker counters.
func (c *Cluster) Breakers() BreakerCounts {
	cs := c.state
	return BreakerCounts{cs.active.Load(), cs.pending.Load(), cs.retries.Load(), cs.conns.Load()}
}
