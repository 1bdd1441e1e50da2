//go:build !race

package h2_test

import (
	"testing"

	"github.com/wasmgate/wasmgate/proxy/h2"
)

// TestServerAllocations holds the server to no allocation per request
// once a connection is warm: the stream state and its RequestCtx are
// pooled, header fields indexed by HPACK are decoded without copies,
// response fields are encoded from the response's own buffers, and
// handlers run on reused goroutines. The client (loadClient) allocates
// nothing, so what is counted is the server's.
func TestServerAllocations(t *testing.T) {
	_, addr := serve(t, hello, h2.Options{})
	lc := dialLoad(t, addr, "/api/v1/items?page=2")
	lc.send(16)
	lc.wait(16)
	allocs := testing.AllocsPerRun(2000, func() {
		lc.send(1)
		lc.wait(1)
	})
	if allocs > 0 {
		t.Errorf("%.2f allocations per request, want none", allocs)
	}
	// Several streams in flight at once.
	allocs = testing.AllocsPerRun(200, func() {
		lc.send(32)
		lc.wait(32)
	})
	if allocs/32 > 0.1 {
		t.Errorf("%.2f allocations per request with 32 in flight, want none", allocs/32)
	}
}
