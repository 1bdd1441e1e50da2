//go:build !race

package h3_test

import (
	"net/http"
	"testing"

	"github.com/wasmgate/wasmgate/proxy/h3"
)

// TestAdapterAllocations holds the adapter (HTTP/3's) to what net/http
// forces: a response header value that is not a common one is copied
// into a string (here the request id); everything else is pooled.
func TestAdapterAllocations(t *testing.T) {
	a := h3.NewAdapter(hello, "HTTP/3", nil)
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
