//go:build !race

package proxy

import (
	"testing"
)

// TestRequestPathAllocs proves the request path allocates nothing per
// request in steady state: routing, forwarding headers, request id,
// balancing, the upstream exchange and the response copy.
func TestRequestPathAllocs(t *testing.T) {
	small := startUpstream(t, []byte("hello"))
	large := startUpstream(t, make([]byte, 1<<20)) // streams
	cases := []struct {
		name, method, uri, host, up string
	}{
		{"forward", "GET", "/users/42?x=1", "www.example.com", small},
		{"forward-vhost", "GET", "/users/42", "API.example.com:8080", small},
		{"header-match", "GET", "/v2/thing", "www.example.com", small},
		{"direct", "GET", "/static", "www.example.com", small},
		{"streamed-body", "GET", "/big", "www.example.com", large},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hp := newHotPath(t, proxyConfig(tc.up), tc.method, tc.uri, tc.host)
			if tc.name == "header-match" {
				hp.tpl.Header.Set("X-Version", "2")
			}
			for i := 0; i < 100; i++ { // warm pools and buffers
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
