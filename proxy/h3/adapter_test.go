package h3_test

import (
	"net"
	"net/http"
	"net/url"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/h3"
)

// hello answers as a small upstream response would arrive: a status, a
// few headers, a short body.
func hello(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentType("text/plain")
	ctx.Response.Header.Set("X-Request-Id", "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9")
	ctx.Response.SetBodyString("hello")
}

// recorder is a minimal http.ResponseWriter whose header map is reused,
// as net/http's servers reuse none: what it allocates is the adapter's.
type recorder struct {
	hdr    http.Header
	status int
	n      int
}

func (r *recorder) Header() http.Header         { return r.hdr }
func (r *recorder) WriteHeader(status int)      { r.status = status }
func (r *recorder) Write(p []byte) (int, error) { r.n += len(p); return len(p), nil }
func (r *recorder) Flush()                      {}

type fakeConn struct{ net.Conn }

func (fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (fakeConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443} }

func benchRequest() *http.Request {
	return &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: "/api/v1/items"},
		RequestURI: "/api/v1/items?page=2",
		Proto:      "HTTP/2.0", ProtoMajor: 2,
		Host: "api.example.com",
		Header: http.Header{
			"Accept":          {"application/json"},
			"User-Agent":      {"bench/1.0"},
			"Accept-Encoding": {"gzip"},
		},
		Body: http.NoBody,
	}
}

// BenchmarkAdapter measures the adapter alone: a net/http request becomes
// a pooled fasthttp.RequestCtx, the handler runs, and the response is
// copied into the ResponseWriter's header map and body.
func BenchmarkAdapter(b *testing.B) {
	a := h3.NewAdapter(hello, "HTTP/2", nil)
	r := benchRequest()
	w := &recorder{hdr: http.Header{}}
	conn := &fakeConn{}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.hdr)
		a.Serve(conn, w, r)
	}
}

// TestAdapterReset: a handler that ends the request without an answer
// (filter.Exchange.ResetStream hijacks it with no response) has the
// stream aborted, which quic-go's server turns into a cancelled stream;
// nothing is written, and the pooled context serves the next request as
// usual.
func TestAdapterReset(t *testing.T) {
	reset := func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/reset" {
			ctx.HijackSetNoResponse(true)
			ctx.Hijack(func(net.Conn) {})
			return
		}
		hello(ctx)
	}
	a := h3.NewAdapter(reset, "HTTP/3", nil)
	r := benchRequest()
	r.RequestURI = "/reset"
	w := &recorder{hdr: http.Header{}}
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("recovered %v, want http.ErrAbortHandler", p)
			}
		}()
		a.Serve(&fakeConn{}, w, r)
	}()
	if w.status != 0 || w.n != 0 {
		t.Errorf("a reset request was answered: status %d, %d bytes", w.status, w.n)
	}
	for range 3 {
		w = &recorder{hdr: http.Header{}}
		a.Serve(&fakeConn{}, w, benchRequest())
		if w.status != 200 || w.n != len("hello") {
			t.Fatalf("after a reset: status %d, %d bytes", w.status, w.n)
		}
	}
}
