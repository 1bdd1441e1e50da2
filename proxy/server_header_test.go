package proxy_test

import (
	"net/http"
	"testing"
)

// TestServerHeader: the proxy's responses say Server: wasmgate unless the
// upstream's has its own, and a response_headers mutation may remove it,
// from forwarded, direct and the proxy's own error responses alike.
func TestServerHeader(t *testing.T) {
	_, v := startEchoes(t, "a")
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: hidden
    domains: [hidden]
    response_headers: {remove: [server]}
    routes:
      - {match: {prefix: /static}, direct_response: {status: 200, body: hi}}
      - {match: {prefix: /down}, cluster: a, timeout: 1ms, rate_limit: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 1h}}
      - {match: {prefix: /}, cluster: a}
  - name: shown
    domains: ["*"]
    routes:
      - {match: {prefix: /static}, direct_response: {status: 200, body: hi}}
      - {match: {prefix: /}, cluster: a}
`, v)
	cases := []struct {
		host, path string
		status     int
		want       string
	}{
		{"hidden", "/", 200, ""},
		{"hidden", "/static", 200, ""},
		{"hidden", "/down", 0, ""}, // first request, then the rate limit's 429
		{"hidden", "/down", http.StatusTooManyRequests, ""},
		{"shown", "/", 200, "wasmgate"},
		{"shown", "/static", 200, "wasmgate"},
	}
	for _, tc := range cases {
		r := e.get(t, tc.host, tc.path)
		if tc.status != 0 && r.status != tc.status {
			t.Errorf("%s%s: status %d, want %d", tc.host, tc.path, r.status, tc.status)
		}
		if got := r.header.Get("Server"); got != tc.want {
			t.Errorf("%s%s: Server %q, want %q", tc.host, tc.path, got, tc.want)
		}
	}
}
