//go:build !race

package proxy

import "testing"

// TestFirstPartyFiltersAllocs proves that the host side of the
// first-party filters allocates nothing per request in steady state:
// their calls, the headers and properties they read and write, the
// filter state they set, the metrics they keep. (Growth of a guest's
// linear memory, a few times while its heap settles, rounds to zero.)
func TestFirstPartyFiltersAllocs(t *testing.T) {
	for _, set := range firstPartySets[1:] {
		t.Run(set.name, func(t *testing.T) {
			hp := firstPartyHotPath(t, set.filters)
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
