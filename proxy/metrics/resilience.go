package metrics

import "github.com/prometheus/client_golang/prometheus"

// resilience are the metrics of health checks, outlier detection, retries,
// circuit breakers and rate limits.
type resilience struct {
	ejections         *prometheus.CounterVec
	healthTransitions *prometheus.CounterVec
	retries           *prometheus.CounterVec
	overflows         *prometheus.CounterVec
	rateLimited       *prometheus.CounterVec
	healthyEndpoints  *prometheus.GaugeVec
	panicMode         *prometheus.GaugeVec
}

func newResilience() resilience {
	return resilience{
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_upstream_ejections_total",
			Help: "Endpoints ejected by outlier detection, by cluster and reason (consecutive_5xx, consecutive_gateway_failure).",
		}, []string{"cluster", "reason"}),
		healthTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_upstream_health_transitions_total",
			Help: "Endpoints that active health checks marked healthy or unhealthy, by cluster and new state.",
		}, []string{"cluster", "state"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_upstream_retries_total",
			Help: "Retries by cluster and result: success and failure of a retry's attempt, exhausted (the retries ran out), overflow (max_retries), budget_exhausted (retry budget).",
		}, []string{"cluster", "result"}),
		overflows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_upstream_overflows_total",
			Help: "Requests, connections and retries refused by a circuit breaker, by cluster and breaker.",
		}, []string{"cluster", "breaker"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_rate_limited_total",
			Help: "Requests answered 429 by a local rate limit, by virtual host and route (empty for the virtual host's limit).",
		}, []string{"virtual_host", "route"}),
		healthyEndpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasmgate_upstream_healthy_endpoints",
			Help: "Endpoints neither failing health checks nor ejected, by cluster.",
		}, []string{"cluster"}),
		panicMode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasmgate_upstream_panic",
			Help: "1 when a cluster balances over all its endpoints because too few are healthy.",
		}, []string{"cluster"}),
	}
}

// Retry results.
const (
	RetrySuccess = iota
	RetryFailure
	RetryExhausted
	RetryOverflow
	RetryBudgetExhausted
)

var retryResults = [...]string{"success", "failure", "exhausted", "overflow", "budget_exhausted"}

var breakers = [...]string{"max_connections", "max_pending_requests", "max_requests", "max_retries"}

// Ejection reasons.
const (
	EjectConsecutive5xx = iota
	EjectConsecutiveGatewayFailure
)

var ejectReasons = [...]string{"consecutive_5xx", "consecutive_gateway_failure"}

// ClusterStats are the resilience metrics of one cluster, resolved once.
// Every method is safe for concurrent use, allocates nothing, and does
// nothing on a nil *ClusterStats.
type ClusterStats struct {
	ejections [len(ejectReasons)]prometheus.Counter
	up, down  prometheus.Counter
	retries   [len(retryResults)]prometheus.Counter
	overflows [len(breakers)]prometheus.Counter
	healthy   prometheus.Gauge
	panic     prometheus.Gauge
}

// Cluster returns the resilience metrics of a cluster.
func (m *Metrics) Cluster(name string) *ClusterStats {
	s := &ClusterStats{
		up:      m.healthTransitions.WithLabelValues(name, "healthy"),
		down:    m.healthTransitions.WithLabelValues(name, "unhealthy"),
		healthy: m.healthyEndpoints.WithLabelValues(name),
		panic:   m.panicMode.WithLabelValues(name),
	}
	for i, r := range ejectReasons {
		s.ejections[i] = m.ejections.WithLabelValues(name, r)
	}
	for i, r := range retryResults {
		s.retries[i] = m.retries.WithLabelValues(name, r)
	}
	for i, b := range breakers {
		s.overflows[i] = m.overflows.WithLabelValues(name, b)
	}
	for _, k := range upstreamErrorKinds {
		m.UpstreamErrors.WithLabelValues(name, k)
	}
	return s
}

// upstreamErrorKinds are the kinds of wasmgate_upstream_errors_total: the
// names of cluster.Failure's failures (a test holds them together).
var upstreamErrorKinds = [...]string{"connect", "timeout", "reset", "overflow"}

// Ejected counts an ejection for a reason (EjectConsecutive5xx, ...).
func (s *ClusterStats) Ejected(reason int) {
	if s != nil {
		s.ejections[reason].Inc()
	}
}

// HealthChanged counts a health check transition.
func (s *ClusterStats) HealthChanged(healthy bool) {
	if s == nil {
		return
	}
	if healthy {
		s.up.Inc()
	} else {
		s.down.Inc()
	}
}

// Retry counts a retry result (RetrySuccess, ...).
func (s *ClusterStats) Retry(result int) {
	if s != nil {
		s.retries[result].Inc()
	}
}

// Overflow counts a refusal by a breaker, indexed as cluster.Breaker.
func (s *ClusterStats) Overflow(breaker int) {
	if s != nil {
		s.overflows[breaker].Inc()
	}
}

// Hosts records the healthy endpoints and whether the cluster panics.
func (s *ClusterStats) Hosts(healthy int, panicking bool) {
	if s == nil {
		return
	}
	s.healthy.Set(float64(healthy))
	if panicking {
		s.panic.Set(1)
	} else {
		s.panic.Set(0)
	}
}

// RateLimited returns the counter of requests a rate limit refused.
func (m *Metrics) RateLimited(vhost, route string) prometheus.Counter {
	return m.rateLimited.WithLabelValues(vhost, route)
}

// EjectionsCounter returns the counter of ejections for a reason.
func (s *ClusterStats) EjectionsCounter(reason int) prometheus.Counter { return s.ejections[reason] }

// HealthCounter returns the counter of transitions to healthy or unhealthy.
func (s *ClusterStats) HealthCounter(healthy bool) prometheus.Counter {
	if healthy {
		return s.up
	}
	return s.down
}

// RetryCounter returns the counter of a retry result.
func (s *ClusterStats) RetryCounter(result int) prometheus.Counter { return s.retries[result] }

// OverflowCounter returns the counter of a breaker's refusals.
func (s *ClusterStats) OverflowCounter(breaker int) prometheus.Counter { return s.overflows[breaker] }
