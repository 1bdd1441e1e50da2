//go:build !race

package proxy_test

import "testing"

// TestTCPProxyAllocs holds a round trip through a TCP listener, with and
// without a network Wasm filter, to no allocation.
func TestTCPProxyAllocs(t *testing.T) {
	for _, filters := range []string{"", "\n    filters: [{plugin: tcpfilter}]"} {
		roundTrip := tcpEchoThrough(t, filters)
		roundTrip()
		if n := testing.AllocsPerRun(50, roundTrip); n != 0 {
			t.Errorf("filters %q: %v allocations per round trip, want 0", filters, n)
		}
	}
}
