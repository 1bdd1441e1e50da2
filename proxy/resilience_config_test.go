package proxy

import "strings"

// resilientConfig is proxyConfig with the resilience machinery on the
// backend cluster and the routes: outlier detection, active health checks,
// circuit breakers with a retry budget, a retry policy and a rate limit.
func resilientConfig(upstreams ...string) string {
	cfg := proxyConfig(upstreams...)
	cfg = strings.Replace(cfg, `  - name: backend
    endpoints:
`, `  - name: backend
    outlier_detection: {consecutive_5xx: 5}
    health_check: {path: /, interval: 1s, initial: healthy}
    circuit_breakers: {max_requests: 100000, retry_budget: {}}
    endpoints:
`, 1)
	cfg = strings.Replace(cfg, `  - name: default
    domains: ["*"]
`, `  - name: default
    domains: ["*"]
    retry_policy: {retry_on: [5xx], num_retries: 2}
    rate_limit: {max_tokens: 1000000000, key: client_ip}
`, 1)
	return cfg
}
