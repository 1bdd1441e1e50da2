package h2_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"

	"github.com/wasmgate/wasmgate/proxy/h2"
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

// BenchmarkServer measures the server alone over a loopback h2c
// connection: a client that allocates nothing writes 64 requests at a
// time in one write (HEADERS only, HPACK-indexed after the first) and reads the
// responses' frame headers; the handler answers as a small upstream
// response would.
func BenchmarkServer(b *testing.B) {
	srv := h2.NewServer(hello, h2.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = srv.ServeConn(c) }()
		}
	}()
	lc := dialLoad(b, ln.Addr().String(), "/api/v1/items?page=2")
	const inFlight = 64
	lc.send(inFlight)
	lc.wait(inFlight)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += inFlight {
		n := min(inFlight, b.N-i)
		lc.send(n)
		lc.wait(n)
	}
}

// BenchmarkH2C measures whole HTTP/2 requests over a loopback h2c
// connection, our server and x/net/http2's client included: 64 streams
// in flight on one connection.
func BenchmarkH2C(b *testing.B) {
	srv := h2.NewServer(hello, h2.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cl := h2.NewCleartextListener(ln, srv, 0)
	defer cl.Close()
	go func() {
		for {
			if _, err := cl.Accept(); err != nil {
				return
			}
		}
	}()
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		return net.Dial(n, a)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	target := "http://" + ln.Addr().String() + "/api/v1/items"
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(target)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
