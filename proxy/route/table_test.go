package route_test

import "testing"

// TestFindStripsOnlyAPort: a virtual host is found by the Host value
// without its port, and only a real port (digits after a name, an IPv4
// address or a bracketed IPv6 address) is stripped. A filter that sets
// :authority to "host:80-canary", as the proxy-wasm Go SDK's http_routing
// example does, reaches the "*-canary" virtual host, as in Envoy.
func TestFindStripsOnlyAPort(t *testing.T) {
	tbl := compile(t, `
listeners: [{name: l, address: 127.0.0.1:0}]
clusters: [{name: c, endpoints: [{address: 127.0.0.1:1}]}]
virtual_hosts:
  - {name: canary, domains: ["*-canary"], routes: [{match: {prefix: /}, cluster: c}]}
  - {name: exact, domains: [api.example.com], routes: [{match: {prefix: /}, cluster: c}]}
  - {name: v6, domains: ["[::1]"], routes: [{match: {prefix: /}, cluster: c}]}
  - {name: any, domains: ["*"], routes: [{match: {prefix: /}, cluster: c}]}
`)
	for host, want := range map[string]string{
		"api.example.com":        "exact",
		"api.example.com:8080":   "exact",
		"API.example.com.:80":    "exact",
		"x-canary":               "canary",
		"x-canary:80":            "canary",
		"127.0.0.1:18000-canary": "canary",
		"localhost:80-canary":    "canary",
		"[::1]":                  "v6",
		"[::1]:8080":             "v6",
		"api.example.com:":       "any",
		"api.example.com:123456": "any",
		"::1":                    "any",
		"":                       "any",
	} {
		vh := tbl.Find([]byte(host))
		if vh == nil || vh.Name != want {
			got := "<nil>"
			if vh != nil {
				got = vh.Name
			}
			t.Errorf("Find(%q) = %s, want %s", host, got, want)
		}
	}
}
