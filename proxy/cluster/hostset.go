package cluster

import (
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/balancer"
)

// hostState is the health of one endpoint of one cluster name, kept across
// reloads in Pools while the endpoint stays. Its fields are atomics read
// by the request path and written by health checks, outlier detection and
// ejection timers.
type hostState struct {
	key stateKey
	// owner is the live cluster that rebuilds its host set when this
	// endpoint's health changes.
	owner ownerPtr

	active  activeHealth
	outlier outlierState
}

type stateKey struct{ cluster, addr string }

// hostSet is what Pick reads: the endpoints requests may go to and a
// balancer built over them. It is immutable; a health change builds a new
// one and swaps it in.
type hostSet struct {
	lb  balancer.Balancer // nil when eps is empty
	eps []*Endpoint
	// healthy is the number of healthy endpoints, panic whether eps is
	// every endpoint because too few are.
	healthy int
	panic   bool
}

// usable reports whether an endpoint may take requests outside panic.
func (c *Cluster) usable(e *Endpoint) bool {
	if c.cfg.HealthCheck != nil && e.state.active.failed.Load() {
		return false
	}
	if c.cfg.OutlierDetection != nil && e.state.outlier.ejected.Load() {
		return false
	}
	return true
}

// panicThreshold is the cluster's threshold in percent.
func (c *Cluster) panicThreshold() int {
	if p := c.cfg.PanicThreshold; p != nil {
		return *p
	}
	return config.DefaultPanicThreshold
}

// rebuild recomputes the host set from the endpoints' health and swaps it
// in if it changed. It runs on health transitions, ejections and reloads,
// never per request; c.mu serialises rebuilds.
func (c *Cluster) rebuild() {
	c.mu.Lock()
	defer c.mu.Unlock()
	healthy := make([]*Endpoint, 0, len(c.endpoints))
	for _, e := range c.endpoints {
		if c.usable(e) {
			healthy = append(healthy, e)
		}
	}
	next := &hostSet{eps: healthy, healthy: len(healthy)}
	n := len(c.endpoints)
	if len(healthy) == n {
		next.eps, next.lb = c.endpoints, c.lb
	} else if t := c.panicThreshold(); t > 0 && len(healthy)*100 < t*n {
		next.eps, next.lb, next.panic = c.endpoints, c.lb, true
	}
	cur := c.hosts.Load()
	if cur != nil && cur.panic == next.panic && cur.healthy == next.healthy && sameEndpoints(cur.eps, next.eps) {
		return
	}
	if next.lb == nil && len(next.eps) > 0 {
		hosts := make([]balancer.Host, len(next.eps))
		for i, e := range next.eps {
			hosts[i] = e
		}
		lb, err := balancer.New(c.cfg.LBPolicy, hosts, balancer.Options{RingSize: c.cfg.RingSize})
		if err != nil {
			// The same policy and weights built c.lb: cannot happen.
			panic("cluster: rebuilding the balancer: " + err.Error())
		}
		next.lb = lb
	}
	c.hosts.Store(next)
	c.state.stats.Hosts(next.healthy, next.panic)
}

func sameEndpoints(a, b []*Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// notify asks the live cluster that owns s to rebuild its host set.
func (s *hostState) notify() {
	if c := s.owner.Load(); c != nil {
		c.rebuild()
	}
}

// EndpointHealth is an endpoint's health as /clusters shows it.
type EndpointHealth struct {
	// Healthy is whether balancing picks the endpoint outside panic.
	Healthy bool `json:"healthy"`
	// HealthCheck is healthy, unhealthy, or empty without health checks.
	HealthCheck string `json:"health_check,omitempty"`
	// Ejected and EjectedUntil say whether outlier detection took the
	// endpoint out, and until when; TimesEjected counts its ejections.
	Ejected      bool       `json:"ejected"`
	EjectedUntil *time.Time `json:"ejected_until,omitempty"`
	TimesEjected int        `json:"times_ejected"`
}

// Health returns the endpoint's health.
func (e *Endpoint) Health() EndpointHealth {
	h := EndpointHealth{Healthy: e.c.usable(e)}
	if e.c.cfg.HealthCheck != nil {
		h.HealthCheck = "healthy"
		if e.state.active.failed.Load() {
			h.HealthCheck = "unhealthy"
		}
	}
	o := &e.state.outlier
	o.mu.Lock()
	h.Ejected, h.TimesEjected = o.ejected.Load(), o.times
	if h.Ejected {
		until := o.until
		h.EjectedUntil = &until
	}
	o.mu.Unlock()
	return h
}

// Panicking reports whether the cluster balances over all its endpoints
// because too few are healthy.
func (c *Cluster) Panicking() bool { return c.hosts.Load().panic }
