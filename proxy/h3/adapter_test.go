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
