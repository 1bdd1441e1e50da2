//go:build !race

package cluster

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestH2ClientAllocations holds an exchange on a warm connection to no
// allocation: the client's stream is pooled with the slices its header
// fields are copied to, the response's header block is decoded by the
// connection's reader into a slice it reuses, and the request's fields
// are encoded from the request's own buffers. The server is the proxy's
// own, which allocates nothing either (TestServerAllocations in
// proxy/h2), so what is counted is both ends of the exchange.
func TestH2ClientAllocations(t *testing.T) {
	c := localH2(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.SetContentType("text/plain")
		ctx.Response.Header.Set("X-Upstream", "a")
		ctx.Response.SetBodyString("hello")
	})
	var req fasthttp.Request
	var resp fasthttp.Response
	req.SetRequestURI("/api/v1/items?page=2")
	req.Header.SetHost("upstream")
	req.Header.Set("X-Request-Id", "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9")
	exchange := func() {
		var s Body
		if err := c.do(&req, &resp, 5*time.Second, &s); err != nil {
			t.Fatal(err)
		}
		// A response whose DATA came in a read of its own is streamed,
		// and allocates; that is rare enough (about one in 50,000 in
		// BenchmarkH2ClientDo) to round away in the average.
		var body []byte
		if !s.Active() {
			body = resp.Body()
		} else {
			// Read from s: resp.Body() would drain the stream first.
			var buf [16]byte
			n := 0
			for n < len(buf) {
				m, err := s.Read(buf[n:])
				n += m
				if err != nil {
					break
				}
			}
			s.Close()
			body = buf[:n]
		}
		if resp.StatusCode() != 200 || string(body) != "hello" || string(resp.Header.Peek("X-Upstream")) != "a" {
			t.Fatalf("response %d %q %q", resp.StatusCode(), body, resp.Header.Peek("X-Upstream"))
		}
	}
	for range 16 {
		exchange()
	}
	if allocs := testing.AllocsPerRun(2000, exchange); allocs > 0 {
		t.Errorf("%.2f allocations per exchange, want none", allocs)
	}
}
