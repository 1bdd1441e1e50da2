package cluster

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/metrics"
)

type ownerPtr = atomic.Pointer[Cluster]

// outlierState is the passive health of an endpoint: failures in a row,
// counted by the request path, and ejections.
type outlierState struct {
	// consec5xx and consecGateway are failures in a row. A success loads
	// them before storing 0, so that the common case reads a shared cache
	// line and writes nothing.
	consec5xx     atomic.Int32
	consecGateway atomic.Int32
	ejected       atomic.Bool

	mu sync.Mutex // guards the fields below and ejection transitions
	// times is the number of ejections, the multiplier of the next one.
	times int
	until time.Time
	// restored is when the last ejection ended.
	restored time.Time
	timer    *time.Timer
}

// outlierPolicy is a cluster's outlier detection, resolved from config.
type outlierPolicy struct {
	consec5xx, consecGateway int32 // 0: off
	base, max                time.Duration
	maxPercent               int
}

func newOutlierPolicy(od *config.OutlierDetection) *outlierPolicy {
	if od == nil {
		return nil
	}
	p := &outlierPolicy{
		base: od.BaseEjectionTime.D(), max: od.MaxEjectionTime.D(), maxPercent: od.MaxEjectionPercent,
	}
	if od.Consecutive5xx > 0 {
		p.consec5xx = int32(od.Consecutive5xx)
	}
	if od.ConsecutiveGatewayFailure > 0 {
		p.consecGateway = int32(od.ConsecutiveGatewayFailure)
	}
	return p
}

// Observe records the outcome of an exchange with the endpoint for
// outlier detection: the response status, or the error that ended it. It
// does nothing for clusters without outlier detection, and allocates
// nothing unless it ejects.
func (e *Endpoint) Observe(status int, err error) {
	p := e.outlier
	if p == nil {
		return
	}
	o := &e.state.outlier
	var fivexx, gateway bool
	if err != nil {
		switch Classify(err) {
		case FailureOverflow, FailureDownstream:
			return // the proxy refused it, or the client failed: the endpoint did nothing wrong
		default:
			fivexx, gateway = true, true
		}
	} else if status >= 500 {
		fivexx = true
		gateway = status == 502 || status == 503 || status == 504
	}
	if !fivexx {
		if o.consec5xx.Load() != 0 {
			o.consec5xx.Store(0)
		}
		if o.consecGateway.Load() != 0 {
			o.consecGateway.Store(0)
		}
		return
	}
	n5 := o.consec5xx.Add(1)
	var ng int32
	if gateway {
		ng = o.consecGateway.Add(1)
	} else if o.consecGateway.Load() != 0 {
		o.consecGateway.Store(0)
	}
	switch {
	case p.consecGateway > 0 && ng >= p.consecGateway:
		e.eject(metrics.EjectConsecutiveGatewayFailure)
	case p.consec5xx > 0 && n5 >= p.consec5xx:
		e.eject(metrics.EjectConsecutive5xx)
	}
}

// eject takes the endpoint out of balancing, unless it is out already or
// max_ejection_percent of the cluster is.
func (e *Endpoint) eject(reason int) {
	p, s := e.outlier, e.state
	c := s.owner.Load()
	if c == nil {
		c = e.c
	}
	o := &s.outlier
	// Serialise the max_ejection_percent check across the cluster.
	c.ejectMu.Lock()
	defer c.ejectMu.Unlock()
	if o.ejected.Load() {
		return
	}
	ejected := 0
	for _, other := range c.endpoints {
		if other.state.outlier.ejected.Load() {
			ejected++
		}
	}
	if ejected > 0 && (ejected+1)*100 > p.maxPercent*len(c.endpoints) {
		return
	}
	now := time.Now()
	o.mu.Lock()
	// The multiplier decays: an endpoint that stayed in for a whole
	// max_ejection_time since its last ejection starts again from base.
	if !o.restored.IsZero() && now.Sub(o.restored) >= p.max {
		o.times = 0
	}
	o.times++
	d := time.Duration(o.times) * p.base
	if d > p.max || d <= 0 {
		d = p.max
	}
	o.until = now.Add(d)
	o.ejected.Store(true)
	o.consec5xx.Store(0)
	o.consecGateway.Store(0)
	if o.timer != nil {
		o.timer.Stop()
	}
	o.timer = time.AfterFunc(d, s.restore)
	o.mu.Unlock()
	c.state.stats.Ejected(reason)
	s.notify()
}

// restore brings an ejected endpoint back when its ejection ends.
func (s *hostState) restore() {
	o := &s.outlier
	o.mu.Lock()
	o.ejected.Store(false)
	o.restored = time.Now()
	o.timer = nil
	o.mu.Unlock()
	s.notify()
}

// stop cancels a pending restore, for a state that is being dropped.
func (s *hostState) stop() {
	o := &s.outlier
	o.mu.Lock()
	if o.timer != nil {
		o.timer.Stop()
		o.timer = nil
	}
	o.mu.Unlock()
	s.owner.Store(nil)
}
