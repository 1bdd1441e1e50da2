package cluster

import (
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
)

// clusterState returns the breaker state of a cluster name, made on first
// use with the cluster's limits. A live cluster's limits are set again by
// Retain, so a reload that changes them applies once the new snapshot is
// live.
func (ps *Pools) clusterState(cfg config.Cluster) *clusterState {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	cs, ok := ps.clusters[cfg.Name]
	if !ok {
		cs = ps.clusterStateLocked(cfg.Name)
		cs.limits.Store(newLimits(cfg.CircuitBreakers))
	}
	return cs
}

func (ps *Pools) clusterStateLocked(name string) *clusterState {
	cs, ok := ps.clusters[name]
	if !ok {
		cs = &clusterState{name: name}
		cs.limits.Store(defaultLimits)
		if ps.metrics != nil {
			cs.stats = ps.metrics.Cluster(name)
		}
		ps.clusters[name] = cs
	}
	return cs
}

// hostState returns the health of an endpoint of c, kept from an earlier
// snapshot when the cluster name had the endpoint, or new: healthy, or
// unhealthy until its first successful probe when c's health check says
// initial: unhealthy.
func (ps *Pools) hostState(c *Cluster, addr string) *hostState {
	k := stateKey{c.Name, addr}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if s, ok := ps.states[k]; ok {
		return s
	}
	s := &hostState{key: k}
	if hc := c.cfg.HealthCheck; hc != nil && hc.Initial == config.HealthInitialUnhealthy {
		s.active.failed.Store(true)
	}
	s.owner.Store(c)
	ps.states[k] = s
	return s
}

// connWait is how long a request waits for a free connection of a pool at
// its max_connections_per_endpoint: with circuit breakers, up to the
// connect timeout, counted as pending; without, not at all (the request
// overflows).
func (ps *Pools) connWait(k poolKey) time.Duration {
	if k.breaker == "" {
		return 0
	}
	return k.connectTimeout
}

// retainHealth keeps the health and breaker state of the live clusters,
// makes them the owners of their endpoints' health, starts the health
// checkers of live clusters that have none running and returns those of
// clusters no longer live, to be closed. ps.mu is held.
func (ps *Pools) retainHealth(live []*Cluster) []*checker {
	usedStates := map[stateKey]bool{}
	usedClusters := map[string]bool{}
	liveSet := map[*Cluster]bool{}
	for _, c := range live {
		liveSet[c] = true
		usedClusters[c.Name] = true
		c.state.limits.Store(newLimits(c.cfg.CircuitBreakers))
		for _, e := range c.endpoints {
			usedStates[e.state.key] = true
			e.state.owner.Store(c)
		}
		if c.cfg.HealthCheck != nil && ps.checkers[c] == nil && len(c.endpoints) > 0 {
			ch := newChecker(c)
			ps.checkers[c] = ch
			go ch.run()
		}
	}
	for k, s := range ps.states {
		if !usedStates[k] {
			s.stop()
			delete(ps.states, k)
		}
	}
	for name := range ps.clusters {
		if !usedClusters[name] {
			delete(ps.clusters, name)
		}
	}
	var stop []*checker
	for c, ch := range ps.checkers {
		if !liveSet[c] {
			stop = append(stop, ch)
			delete(ps.checkers, c)
		}
	}
	return stop
}

// Close stops the health checks and ejection timers. The pools stay
// usable by requests still in flight.
func (ps *Pools) Close() {
	ps.mu.Lock()
	stop := ps.retainHealth(nil)
	ps.mu.Unlock()
	for _, ch := range stop {
		ch.Close()
	}
}

// PickOther chooses an endpoint for a retry: one other than prev when the
// host set has another, else prev again. It is lock-free and allocates
// nothing.
func (c *Cluster) PickOther(ctx *fasthttp.RequestCtx, prev *Endpoint) *Endpoint {
	hs := c.hosts.Load()
	if hs.lb == nil {
		return nil
	}
	var h uint64
	if c.hash.kind != hashNone {
		h = c.hash.of(ctx)
	}
	for try := uint64(1); try <= 3; try++ {
		// A consistent hash maps the same key to prev again: move it.
		i := hs.lb.Pick(h + try*0x9e3779b97f4a7c15)
		if i >= 0 && hs.eps[i] != prev {
			return hs.eps[i]
		}
	}
	for i, e := range hs.eps {
		if e == prev {
			return hs.eps[(i+1)%len(hs.eps)]
		}
	}
	return hs.eps[0]
}
