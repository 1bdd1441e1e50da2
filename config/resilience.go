package config

import (
	"fmt"
	"strconv"
	"strings"
)

// HealthCheck configures active health checking of a cluster's endpoints:
// one probe per endpoint every Interval (plus up to IntervalJitter), an
// endpoint going down after UnhealthyThreshold failures in a row and
// coming back after HealthyThreshold successes in a row.
type HealthCheck struct {
	// Type is http (the default) or tcp (a connect that succeeds is healthy).
	Type string `yaml:"type,omitempty" json:"type,omitempty"`
	// Path is the request path of an http check. Empty means "/".
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// Method of an http check; empty means GET.
	Method string `yaml:"method,omitempty" json:"method,omitempty"`
	// Host is the Host header of an http check; empty means the endpoint's address.
	Host string `yaml:"host,omitempty" json:"host,omitempty"`
	// ExpectedStatuses are the statuses of a healthy answer: codes ("204")
	// or inclusive ranges ("200-399"). Empty means 200-299.
	ExpectedStatuses []string `yaml:"expected_statuses,omitempty" json:"expected_statuses,omitempty"`
	// Interval between two probes of an endpoint. Zero means 5s.
	Interval Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
	// IntervalJitter adds a random wait up to this to every interval, so
	// that proxies started together do not probe together.
	IntervalJitter Duration `yaml:"interval_jitter,omitempty" json:"interval_jitter,omitempty"`
	// Timeout bounds one probe. Zero means 1s.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// HealthyThreshold is the successes in a row that make an unhealthy
	// endpoint healthy. Zero means 2.
	HealthyThreshold int `yaml:"healthy_threshold,omitempty" json:"healthy_threshold,omitempty"`
	// UnhealthyThreshold is the failures in a row that make a healthy
	// endpoint unhealthy. Zero means 3.
	UnhealthyThreshold int `yaml:"unhealthy_threshold,omitempty" json:"unhealthy_threshold,omitempty"`
	// Initial is the state of an endpoint not probed yet: unhealthy (the
	// default; its first successful probe makes it healthy) or healthy.
	Initial string `yaml:"initial,omitempty" json:"initial,omitempty"`
}

// Health check types and initial states.
const (
	HealthCheckHTTP        = "http"
	HealthCheckTCP         = "tcp"
	HealthInitialHealthy   = "healthy"
	HealthInitialUnhealthy = "unhealthy"
)

// OutlierDetection ejects endpoints that fail requests (passive health
// checking): an endpoint is taken out of balancing for BaseEjectionTime
// times the number of its ejections, at most MaxEjectionTime, and comes
// back by itself.
type OutlierDetection struct {
	// Consecutive5xx is the 5xx answers (or connect failures, resets and
	// timeouts) in a row that eject an endpoint. Zero means 5; -1 turns
	// this detector off.
	Consecutive5xx int `yaml:"consecutive_5xx,omitempty" json:"consecutive_5xx,omitempty"`
	// ConsecutiveGatewayFailure is the gateway failures in a row (502, 503,
	// 504, connect failure, reset, timeout) that eject an endpoint. Zero
	// means 5; -1 turns this detector off.
	ConsecutiveGatewayFailure int `yaml:"consecutive_gateway_failure,omitempty" json:"consecutive_gateway_failure,omitempty"`
	// BaseEjectionTime is the first ejection's length. Zero means 30s.
	BaseEjectionTime Duration `yaml:"base_ejection_time,omitempty" json:"base_ejection_time,omitempty"`
	// MaxEjectionTime caps an ejection's length. Zero means 300s.
	MaxEjectionTime Duration `yaml:"max_ejection_time,omitempty" json:"max_ejection_time,omitempty"`
	// MaxEjectionPercent bounds the share of the cluster's endpoints
	// ejected at once; one endpoint may always be ejected. Zero means 10.
	MaxEjectionPercent int `yaml:"max_ejection_percent,omitempty" json:"max_ejection_percent,omitempty"`
}

// CircuitBreakers bound what a cluster may ask of its endpoints. A request
// past a limit is answered 503 at once and never reaches an endpoint.
// Zero fields take Envoy's defaults.
type CircuitBreakers struct {
	// MaxConnections bounds the connections open to all the cluster's
	// endpoints. Zero means 1024.
	MaxConnections int `yaml:"max_connections,omitempty" json:"max_connections,omitempty"`
	// MaxPendingRequests bounds the requests waiting for a connection.
	// Zero means 1024.
	MaxPendingRequests int `yaml:"max_pending_requests,omitempty" json:"max_pending_requests,omitempty"`
	// MaxRequests bounds the requests in flight to the cluster. Zero means 1024.
	MaxRequests int `yaml:"max_requests,omitempty" json:"max_requests,omitempty"`
	// MaxRetries bounds the retries in flight to the cluster. Zero means
	// 3. RetryBudget replaces it when set.
	MaxRetries int `yaml:"max_retries,omitempty" json:"max_retries,omitempty"`
	// RetryBudget bounds retries in flight to a share of the requests in
	// flight.
	RetryBudget *RetryBudget `yaml:"retry_budget,omitempty" json:"retry_budget,omitempty"`
}

// RetryBudget lets BudgetPercent of a cluster's requests in flight be
// retries, and at least MinRetryConcurrency.
type RetryBudget struct {
	// BudgetPercent is 0 to 100. Zero means 20.
	BudgetPercent float64 `yaml:"budget_percent,omitempty" json:"budget_percent,omitempty"`
	// MinRetryConcurrency is the retries allowed whatever the traffic.
	// Zero means 3.
	MinRetryConcurrency int `yaml:"min_retry_concurrency,omitempty" json:"min_retry_concurrency,omitempty"`
}

// RetryPolicy says which failed requests a route sends again, how often
// and how soon. The route's timeout bounds all attempts together.
type RetryPolicy struct {
	// RetryOn lists the conditions: 5xx, gateway-error (502, 503, 504),
	// reset, connect-failure, retriable-status-codes. Empty means
	// connect-failure, reset and gateway-error.
	RetryOn []string `yaml:"retry_on,omitempty" json:"retry_on,omitempty"`
	// NumRetries is the retries after the first attempt. Zero means 1.
	NumRetries int `yaml:"num_retries,omitempty" json:"num_retries,omitempty"`
	// PerTryTimeout bounds one attempt. Zero means the route's timeout.
	PerTryTimeout Duration `yaml:"per_try_timeout,omitempty" json:"per_try_timeout,omitempty"`
	// RetriableStatusCodes are retried with retriable-status-codes.
	RetriableStatusCodes []int `yaml:"retriable_status_codes,omitempty" json:"retriable_status_codes,omitempty"`
	// RetriableMethods are the methods retried. Empty means the idempotent
	// ones: GET, HEAD, OPTIONS, PUT, DELETE, TRACE. A connect failure is
	// retried whatever the method: nothing reached the endpoint.
	RetriableMethods []string `yaml:"retriable_methods,omitempty" json:"retriable_methods,omitempty"`
	// BackOff spaces the retries.
	BackOff *BackOff `yaml:"back_off,omitempty" json:"back_off,omitempty"`
}

// BackOff is a fully jittered exponential back-off: before retry n the
// proxy waits a random time up to min(BaseInterval × 2^(n-1), MaxInterval).
type BackOff struct {
	// BaseInterval is zero for 25ms.
	BaseInterval Duration `yaml:"base_interval,omitempty" json:"base_interval,omitempty"`
	// MaxInterval is zero for 10 × BaseInterval.
	MaxInterval Duration `yaml:"max_interval,omitempty" json:"max_interval,omitempty"`
}

// Retry conditions.
const (
	RetryOn5xx                  = "5xx"
	RetryOnGatewayError         = "gateway-error"
	RetryOnReset                = "reset"
	RetryOnConnectFailure       = "connect-failure"
	RetryOnRetriableStatusCodes = "retriable-status-codes"
)

// DefaultRetriableMethods are the methods a retry policy retries when it
// names none.
var DefaultRetriableMethods = []string{"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}

// RateLimit is a local token bucket: MaxTokens at most, TokensPerFill
// added every FillInterval, one taken by each request. A request finding
// the bucket empty gets 429. Key splits the bucket per client.
type RateLimit struct {
	MaxTokens int `yaml:"max_tokens" json:"max_tokens"`
	// TokensPerFill is zero for MaxTokens.
	TokensPerFill int `yaml:"tokens_per_fill,omitempty" json:"tokens_per_fill,omitempty"`
	// FillInterval is zero for 1s.
	FillInterval Duration `yaml:"fill_interval,omitempty" json:"fill_interval,omitempty"`
	// Key is empty (one bucket for all), client_ip, or header (a bucket
	// per value of the header named by Header).
	Key    string `yaml:"key,omitempty" json:"key,omitempty"`
	Header string `yaml:"header,omitempty" json:"header,omitempty"`
	// MaxKeys bounds the buckets kept for a keyed limit; the least
	// recently refilled are evicted past it. Zero means 65536.
	MaxKeys int `yaml:"max_keys,omitempty" json:"max_keys,omitempty"`
}

// Rate limit keys.
const (
	RateLimitKeyNone     = ""
	RateLimitKeyClientIP = "client_ip"
	RateLimitKeyHeader   = "header"
)

// Defaults of the resilience settings that Normalize fills in.
const (
	DefaultPanicThreshold = 50
)

// normalize fills in the defaults of a health check.
func (h *HealthCheck) normalize() {
	if h.Type == "" {
		h.Type = HealthCheckHTTP
	}
	if h.Initial == "" {
		h.Initial = HealthInitialUnhealthy
	}
	if h.Type == HealthCheckHTTP {
		if h.Path == "" {
			h.Path = "/"
		}
		if h.Method == "" {
			h.Method = "GET"
		}
		h.Method = strings.ToUpper(h.Method)
		if len(h.ExpectedStatuses) == 0 {
			h.ExpectedStatuses = []string{"200-299"}
		}
	}
	if h.Interval == 0 {
		h.Interval = Duration(5e9)
	}
	if h.Timeout == 0 {
		h.Timeout = Duration(1e9)
	}
	if h.HealthyThreshold == 0 {
		h.HealthyThreshold = 2
	}
	if h.UnhealthyThreshold == 0 {
		h.UnhealthyThreshold = 3
	}
}

func (o *OutlierDetection) normalize() {
	if o.Consecutive5xx == 0 {
		o.Consecutive5xx = 5
	}
	if o.ConsecutiveGatewayFailure == 0 {
		o.ConsecutiveGatewayFailure = 5
	}
	if o.BaseEjectionTime == 0 {
		o.BaseEjectionTime = Duration(30e9)
	}
	if o.MaxEjectionTime == 0 {
		o.MaxEjectionTime = Duration(300e9)
	}
	if o.MaxEjectionPercent == 0 {
		o.MaxEjectionPercent = 10
	}
}

func (b *CircuitBreakers) normalize() {
	for _, f := range []*int{&b.MaxConnections, &b.MaxPendingRequests, &b.MaxRequests} {
		if *f == 0 {
			*f = 1024
		}
	}
	if b.MaxRetries == 0 {
		b.MaxRetries = 3
	}
	if rb := b.RetryBudget; rb != nil {
		if rb.BudgetPercent == 0 {
			rb.BudgetPercent = 20
		}
		if rb.MinRetryConcurrency == 0 {
			rb.MinRetryConcurrency = 3
		}
	}
}

func (r *RetryPolicy) normalize() {
	if len(r.RetryOn) == 0 {
		r.RetryOn = []string{RetryOnConnectFailure, RetryOnReset, RetryOnGatewayError}
	}
	for i := range r.RetryOn {
		r.RetryOn[i] = strings.ToLower(r.RetryOn[i])
	}
	if r.NumRetries == 0 {
		r.NumRetries = 1
	}
	if len(r.RetriableMethods) == 0 {
		r.RetriableMethods = append([]string(nil), DefaultRetriableMethods...)
	}
	for i := range r.RetriableMethods {
		r.RetriableMethods[i] = strings.ToUpper(r.RetriableMethods[i])
	}
	if r.BackOff == nil {
		r.BackOff = &BackOff{}
	}
	if r.BackOff.BaseInterval == 0 {
		r.BackOff.BaseInterval = Duration(25e6)
	}
	if r.BackOff.MaxInterval == 0 {
		r.BackOff.MaxInterval = 10 * r.BackOff.BaseInterval
	}
}

func (r *RateLimit) normalize() {
	if r.TokensPerFill == 0 {
		r.TokensPerFill = r.MaxTokens
	}
	if r.FillInterval == 0 {
		r.FillInterval = Duration(1e9)
	}
	r.Header = strings.ToLower(r.Header)
	if r.Key != RateLimitKeyNone && r.MaxKeys == 0 {
		r.MaxKeys = 65536
	}
}

// StatusRange is an inclusive range of HTTP statuses.
type StatusRange struct{ Min, Max int }

// ParseStatusRanges parses expected statuses as a health check takes them:
// "204" or "200-399".
func ParseStatusRanges(ss []string) ([]StatusRange, error) {
	out := make([]StatusRange, 0, len(ss))
	for _, s := range ss {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err != nil || a < 100 || b > 599 || a > b {
			return nil, fmt.Errorf("%q is not a status or a range of statuses between 100 and 599", s)
		}
		out = append(out, StatusRange{a, b})
	}
	return out, nil
}

// normalizeResilience fills in the defaults of a cluster's health check,
// outlier detection and circuit breakers, when they are set.
func (cl *Cluster) normalizeResilience() {
	if cl.HealthCheck != nil {
		cl.HealthCheck.normalize()
	}
	if cl.OutlierDetection != nil {
		cl.OutlierDetection.normalize()
	}
	if cl.CircuitBreakers != nil {
		cl.CircuitBreakers.normalize()
	}
}

func normalizeRouteResilience(r *RetryPolicy, rl *RateLimit) {
	if r != nil {
		r.normalize()
	}
	if rl != nil {
		rl.normalize()
	}
}
