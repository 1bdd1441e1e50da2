//go:build !race

package loadgen

import (
	"testing"
)

// TestH1ClosedLoopAllocs proves that a request of the HTTP/1.1 closed loop,
// sent, read and recorded, allocates nothing in steady state.
func TestH1ClosedLoopAllocs(t *testing.T) {
	w := newTestWorker(t)
	for range 100 { // warm the buffers and the timeline
		w.step()
	}
	allocs := testing.AllocsPerRun(2000, func() {
		if !w.step() {
			t.Fatal("worker stopped")
		}
	})
	if allocs != 0 {
		t.Fatalf("%.2f allocations per request, want 0", allocs)
	}
	if e := w.st.errors.Load(); e != 0 {
		t.Fatalf("%d errors", e)
	}
}
