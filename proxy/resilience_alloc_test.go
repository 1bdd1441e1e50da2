//go:build !race

package proxy

import (
	"testing"
)

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
