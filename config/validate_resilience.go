package config

import "strings"

// validateResilience checks the health checks, outlier detection, circuit
// breakers and panic thresholds of clusters, the retry policies and rate
// limits of virtual hosts and routes, and the downstream timeouts of
// listeners.
func (c *Config) validateResilience(v *errs) {
	for i, l := range c.Listeners {
		p := idx("listeners", i)
		checkNonNegative(v, dot(p, "header_read_timeout"), l.HeaderReadTimeout)
		checkNonNegative(v, dot(p, "body_read_timeout"), l.BodyReadTimeout)
		checkNonNegative(v, dot(p, "max_connection_age"), l.MaxConnectionAge)
	}
	for i, cl := range c.Clusters {
		p := idx("clusters", i)
		if hc := cl.HealthCheck; hc != nil {
			validateHealthCheck(v, dot(p, "health_check"), hc)
		}
		if od := cl.OutlierDetection; od != nil {
			validateOutlier(v, dot(p, "outlier_detection"), od)
		}
		if cb := cl.CircuitBreakers; cb != nil {
			validateBreakers(v, dot(p, "circuit_breakers"), cb)
		}
		if pt := cl.PanicThreshold; pt != nil && (*pt < 0 || *pt > 100) {
			v.add(dot(p, "panic_threshold"), "must be between 0 and 100, not %d", *pt)
		}
	}
	for i, vh := range c.VirtualHosts {
		p := idx("virtual_hosts", i)
		if vh.Retry != nil {
			validateRetry(v, dot(p, "retry_policy"), vh.Retry)
		}
		if vh.RateLimit != nil {
			validateRateLimit(v, dot(p, "rate_limit"), vh.RateLimit)
		}
		for j, r := range vh.Routes {
			rp := idx(dot(p, "routes"), j)
			if r.Retry != nil {
				validateRetry(v, dot(rp, "retry_policy"), r.Retry)
			}
			if r.RateLimit != nil {
				validateRateLimit(v, dot(rp, "rate_limit"), r.RateLimit)
			}
		}
	}
}

func checkNonNegative(v *errs, p string, d Duration) {
	if d < 0 {
		v.add(p, "must not be negative")
	}
}

func checkPositive(v *errs, p string, d Duration) {
	if d <= 0 {
		v.add(p, "must be positive")
	}
}

func validateHealthCheck(v *errs, p string, hc *HealthCheck) {
	switch hc.Type {
	case HealthCheckHTTP:
		if !strings.HasPrefix(hc.Path, "/") {
			v.add(dot(p, "path"), "must start with '/'")
		}
		checkNoCRLF(v, dot(p, "path"), hc.Path)
		if strings.ContainsAny(hc.Path, " \t") {
			v.add(dot(p, "path"), "must not contain spaces")
		}
		if !validMethods.MatchString(hc.Method) {
			v.add(dot(p, "method"), "%q is not a method", hc.Method)
		}
		checkNoCRLF(v, dot(p, "host"), hc.Host)
		if _, err := ParseStatusRanges(hc.ExpectedStatuses); err != nil {
			v.add(dot(p, "expected_statuses"), "%s", err.Error())
		}
	case HealthCheckTCP:
		if hc.Path != "" || hc.Host != "" || len(hc.ExpectedStatuses) > 0 {
			v.add(p, "path, host and expected_statuses are for http checks")
		}
	default:
		v.add(dot(p, "type"), "unknown type %q (want http or tcp)", hc.Type)
	}
	switch hc.Initial {
	case HealthInitialHealthy, HealthInitialUnhealthy:
	default:
		v.add(dot(p, "initial"), "unknown state %q (want healthy or unhealthy)", hc.Initial)
	}
	checkPositive(v, dot(p, "interval"), hc.Interval)
	checkNonNegative(v, dot(p, "interval_jitter"), hc.IntervalJitter)
	checkPositive(v, dot(p, "timeout"), hc.Timeout)
	if hc.HealthyThreshold < 1 || hc.HealthyThreshold > 1000 {
		v.add(dot(p, "healthy_threshold"), "must be between 1 and 1000")
	}
	if hc.UnhealthyThreshold < 1 || hc.UnhealthyThreshold > 1000 {
		v.add(dot(p, "unhealthy_threshold"), "must be between 1 and 1000")
	}
}

func validateOutlier(v *errs, p string, od *OutlierDetection) {
	if od.Consecutive5xx < -1 || od.Consecutive5xx == 0 {
		v.add(dot(p, "consecutive_5xx"), "must be at least 1, or -1 for off")
	}
	if od.ConsecutiveGatewayFailure < -1 || od.ConsecutiveGatewayFailure == 0 {
		v.add(dot(p, "consecutive_gateway_failure"), "must be at least 1, or -1 for off")
	}
	checkPositive(v, dot(p, "base_ejection_time"), od.BaseEjectionTime)
	checkPositive(v, dot(p, "max_ejection_time"), od.MaxEjectionTime)
	if od.MaxEjectionTime > 0 && od.MaxEjectionTime < od.BaseEjectionTime {
		v.add(dot(p, "max_ejection_time"), "must not be below base_ejection_time")
	}
	if od.MaxEjectionPercent < 1 || od.MaxEjectionPercent > 100 {
		v.add(dot(p, "max_ejection_percent"), "must be between 1 and 100")
	}
}

func validateBreakers(v *errs, p string, cb *CircuitBreakers) {
	for _, f := range []struct {
		name string
		n    int
	}{
		{"max_connections", cb.MaxConnections}, {"max_pending_requests", cb.MaxPendingRequests},
		{"max_requests", cb.MaxRequests}, {"max_retries", cb.MaxRetries},
	} {
		if f.n < 1 {
			v.add(dot(p, f.name), "must be at least 1")
		}
	}
	if rb := cb.RetryBudget; rb != nil {
		if rb.BudgetPercent <= 0 || rb.BudgetPercent > 100 {
			v.add(dot(p, "retry_budget.budget_percent"), "must be above 0 and at most 100")
		}
		if rb.MinRetryConcurrency < 1 {
			v.add(dot(p, "retry_budget.min_retry_concurrency"), "must be at least 1")
		}
	}
}

var retryConditions = map[string]bool{
	RetryOn5xx: true, RetryOnGatewayError: true, RetryOnReset: true,
	RetryOnConnectFailure: true, RetryOnRetriableStatusCodes: true,
}

func validateRetry(v *errs, p string, r *RetryPolicy) {
	codes := false
	for i, on := range r.RetryOn {
		if !retryConditions[on] {
			v.add(idx(dot(p, "retry_on"), i), "unknown condition %q (want 5xx, gateway-error, reset, connect-failure or retriable-status-codes)", on)
		}
		codes = codes || on == RetryOnRetriableStatusCodes
	}
	if codes && len(r.RetriableStatusCodes) == 0 {
		v.add(dot(p, "retriable_status_codes"), "retriable-status-codes needs at least one code")
	}
	for i, s := range r.RetriableStatusCodes {
		if s < 100 || s > 599 {
			v.add(idx(dot(p, "retriable_status_codes"), i), "must be between 100 and 599")
		}
	}
	if r.NumRetries < 1 || r.NumRetries > 10 {
		v.add(dot(p, "num_retries"), "must be between 1 and 10")
	}
	checkNonNegative(v, dot(p, "per_try_timeout"), r.PerTryTimeout)
	for i, m := range r.RetriableMethods {
		if !validMethods.MatchString(m) {
			v.add(idx(dot(p, "retriable_methods"), i), "%q is not a method", m)
		}
	}
	if b := r.BackOff; b != nil {
		checkPositive(v, dot(p, "back_off.base_interval"), b.BaseInterval)
		if b.MaxInterval < b.BaseInterval {
			v.add(dot(p, "back_off.max_interval"), "must not be below base_interval")
		}
	}
}

func validateRateLimit(v *errs, p string, rl *RateLimit) {
	if rl.MaxTokens < 1 {
		v.add(dot(p, "max_tokens"), "must be at least 1")
	}
	if rl.MaxTokens >= 1 && (rl.TokensPerFill < 1 || rl.TokensPerFill > rl.MaxTokens) {
		v.add(dot(p, "tokens_per_fill"), "must be between 1 and max_tokens")
	}
	if rl.FillInterval < 1e6 {
		v.add(dot(p, "fill_interval"), "must be at least 1ms")
	}
	switch rl.Key {
	case RateLimitKeyNone, RateLimitKeyClientIP:
		if rl.Header != "" {
			v.add(dot(p, "header"), "is only used with key: header")
		}
	case RateLimitKeyHeader:
		if !validHeaderName(rl.Header) {
			v.add(dot(p, "header"), "%q is not a valid header name", rl.Header)
		}
	default:
		v.add(dot(p, "key"), "unknown key %q (want client_ip or header, or nothing for one bucket)", rl.Key)
	}
	if rl.MaxKeys < 0 || rl.MaxKeys > 1<<24 {
		v.add(dot(p, "max_keys"), "must be between 1 and 16777216")
	}
}
