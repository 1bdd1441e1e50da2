//go:build !race

package h2_test

import (
	"net/http"
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

// TestAdapterAllocations holds the adapter (HTTP/3's) to what net/http
// forces: a response header value that is not a common one is copied
// into a string (here the request id); everything else is pooled.
func TestAdapterAllocations(t *testing.T) {
	a := h2.NewAdapter(hello, "HTTP/3", nil)
	r := benchRequest()
	w := &recorder{hdr: http.Header{}}
	conn := &fakeConn{}
	allocs := testing.AllocsPerRun(1000, func() {
		clear(w.hdr)
		w.n = 0
		a.Serve(conn, w, r)
	})
	if allocs > 1 {
		t.Errorf("%.1f allocations per request, want at most 1", allocs)
	}
	if w.status != 200 || w.n != len("hello") || w.hdr.Get("Content-Type") != "text/plain" || w.hdr.Get("Content-Length") != "5" {
		t.Errorf("response %d %v, %d body bytes", w.status, w.hdr, w.n)
	}
}
