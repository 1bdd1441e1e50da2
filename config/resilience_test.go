package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const resilienceBase = `listeners:
- name: main
  address: ":8080"
clusters:
- name: api
  endpoints:
  - address: "10.0.0.1:80"
`

func TestResilienceDefaults(t *testing.T) {
	cfg, err := Parse([]byte(resilienceBase+`  health_check: {path: /healthz}
  outlier_detection: {}
  circuit_breakers: {retry_budget: {}}
virtual_hosts:
- name: web
  domains: ["*"]
  retry_policy: {retry_on: [5XX]}
  rate_limit: {max_tokens: 10, key: header, header: X-Api-Key}
  routes:
  - cluster: api
    retry_policy: {num_retries: 3, retriable_methods: [post]}
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cl := cfg.Clusters[0]
	if hc := cl.HealthCheck; hc.Type != "http" || hc.Method != "GET" || hc.Interval.D().String() != "5s" ||
		hc.HealthyThreshold != 2 || hc.UnhealthyThreshold != 3 || hc.Initial != "unhealthy" || hc.ExpectedStatuses[0] != "200-299" {
		t.Errorf("health check defaults: %+v", hc)
	}
	if od := cl.OutlierDetection; od.Consecutive5xx != 5 || od.ConsecutiveGatewayFailure != 5 || od.MaxEjectionPercent != 10 ||
		od.BaseEjectionTime.D().String() != "30s" || od.MaxEjectionTime.D().String() != "5m0s" {
		t.Errorf("outlier defaults: %+v", od)
	}
	if cb := cl.CircuitBreakers; cb.MaxConnections != 1024 || cb.MaxRetries != 3 || cb.RetryBudget.BudgetPercent != 20 || cb.RetryBudget.MinRetryConcurrency != 3 {
		t.Errorf("breaker defaults: %+v %+v", cb, cb.RetryBudget)
	}
	vh := cfg.VirtualHosts[0]
	if r := vh.Retry; !reflect.DeepEqual(r.RetryOn, []string{"5xx"}) || r.NumRetries != 1 || r.BackOff.BaseInterval.D().String() != "25ms" ||
		r.BackOff.MaxInterval.D().String() != "250ms" || !reflect.DeepEqual(r.RetriableMethods, DefaultRetriableMethods) {
		t.Errorf("vhost retry defaults: %+v", r)
	}
	if rl := vh.RateLimit; rl.TokensPerFill != 10 || rl.FillInterval.D().String() != "1s" || rl.Header != "x-api-key" || rl.MaxKeys != 65536 {
		t.Errorf("rate limit defaults: %+v", rl)
	}
	if r := vh.Routes[0].Retry; r.NumRetries != 3 || !reflect.DeepEqual(r.RetriableMethods, []string{"POST"}) ||
		!reflect.DeepEqual(r.RetryOn, []string{"connect-failure", "reset", "gateway-error"}) {
		t.Errorf("route retry: %+v", r)
	}
}

func TestResilienceErrors(t *testing.T) {
	vhost := `virtual_hosts:
- name: web
  domains: ["*"]
  routes:
  - cluster: api
`
	tests := []struct {
		name, in string
		want     []string
	}{
		{"health check", resilienceBase + `  health_check: {type: udp, initial: maybe, interval: -1s, unhealthy_threshold: -2}
` + vhost, []string{
			"clusters[0].health_check.type: unknown type \"udp\"",
			"clusters[0].health_check.initial: unknown state \"maybe\"",
			"clusters[0].health_check.interval: must be positive",
			"clusters[0].health_check.unhealthy_threshold: must be between 1 and 1000",
		}},
		{"health check http", resilienceBase + `  health_check: {path: healthz, expected_statuses: ["200-100", "abc"]}
` + vhost, []string{
			"clusters[0].health_check.path: must start with '/'",
			"clusters[0].health_check.expected_statuses: \"200-100\" is not a status",
		}},
		{"tcp with path", resilienceBase + `  health_check: {type: tcp, path: /x}
` + vhost, []string{"clusters[0].health_check: path, host and expected_statuses are for http checks"}},
		{"outlier", resilienceBase + `  outlier_detection: {consecutive_5xx: -3, max_ejection_percent: 101, base_ejection_time: 10s, max_ejection_time: 1s}
` + vhost, []string{
			"clusters[0].outlier_detection.consecutive_5xx: must be at least 1, or -1 for off",
			"clusters[0].outlier_detection.max_ejection_time: must not be below base_ejection_time",
			"clusters[0].outlier_detection.max_ejection_percent: must be between 1 and 100",
		}},
		{"breakers", resilienceBase + `  circuit_breakers: {max_requests: -1, retry_budget: {budget_percent: 150}}
  panic_threshold: 101
` + vhost, []string{
			"clusters[0].circuit_breakers.max_requests: must be at least 1",
			"clusters[0].circuit_breakers.retry_budget.budget_percent: must be above 0 and at most 100",
			"clusters[0].panic_threshold: must be between 0 and 100",
		}},
		{"retry", resilienceBase + vhost + `    retry_policy: {retry_on: [5xx, retriable-status-codes, teapot], num_retries: 11, retriable_methods: ["get me"], back_off: {base_interval: 1s, max_interval: 10ms}}
`, []string{
			"virtual_hosts[0].routes[0].retry_policy.retry_on[2]: unknown condition \"teapot\"",
			"virtual_hosts[0].routes[0].retry_policy.retriable_status_codes: retriable-status-codes needs at least one code",
			"virtual_hosts[0].routes[0].retry_policy.num_retries: must be between 1 and 10",
			"virtual_hosts[0].routes[0].retry_policy.retriable_methods[0]: \"GET ME\" is not a method",
			"virtual_hosts[0].routes[0].retry_policy.back_off.max_interval: must not be below base_interval",
		}},
		{"rate limit", resilienceBase + `virtual_hosts:
- name: web
  domains: ["*"]
  rate_limit: {max_tokens: 0, key: cookie}
  routes:
  - cluster: api
    rate_limit: {max_tokens: 5, tokens_per_fill: 6, key: header, fill_interval: 1us}
`, []string{
			"virtual_hosts[0].rate_limit.max_tokens: must be at least 1",
			"virtual_hosts[0].rate_limit.key: unknown key \"cookie\"",
			"virtual_hosts[0].routes[0].rate_limit.tokens_per_fill: must be between 1 and max_tokens",
			"virtual_hosts[0].routes[0].rate_limit.fill_interval: must be at least 1ms",
			"virtual_hosts[0].routes[0].rate_limit.header: \"\" is not a valid header name",
		}},
		{"listener timeouts", `listeners:
- name: main
  address: ":8080"
  header_read_timeout: -1s
  max_connection_age: -5s
clusters:
- name: api
  endpoints:
  - address: "10.0.0.1:80"
` + vhost, []string{
			"listeners[0].header_read_timeout: must not be negative",
			"listeners[0].max_connection_age: must not be negative",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), "")
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("want Errors, got %v", err)
			}
			got := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			if len(es) != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%s", len(es), len(tc.want), got)
			}
		})
	}
}

func TestParseStatusRanges(t *testing.T) {
	got, err := ParseStatusRanges([]string{"204", "200-399", " 500 - 503 "})
	if err != nil {
		t.Fatal(err)
	}
	want := []StatusRange{{204, 204}, {200, 399}, {500, 503}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"99", "600", "300-200", "2xx", ""} {
		if _, err := ParseStatusRanges([]string{bad}); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}
