//go:build !race

package proxy

import (
	"strings"
	"testing"
)

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

// TestResilientPathAllocs proves that outlier detection, health-checked
// host sets, breakers, a retry policy and a keyed rate limit add no
// allocation to the request path.
func TestResilientPathAllocs(t *testing.T) {
	small := startUpstream(t, []byte("hello"))
	large := startUpstream(t, make([]byte, 1<<20))
	for _, tc := range []struct{ name, uri, up string }{
		{"forward", "/users/42?x=1", small},
		{"streamed-body", "/big", large},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hp := newHotPath(t, resilientConfig(tc.up), "GET", tc.uri, "www.example.com")
			for i := 0; i < 100; i++ {
				hp.do(t)
			}
			allocs := testing.AllocsPerRun(1000, func() {
				if st := hp.do(t); st != 200 {
					t.Fatalf("status %d", st)
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per request, want 0", allocs)
			}
		})
	}
}
