package cluster

import (
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/h2"
)

// BenchmarkH2ClientDo sends GET requests through the HTTP/2 client to the
// proxy's own HTTP/2 server over loopback h2c, from GOMAXPROCS goroutines
// sharing one connection, and reads each small response whole. The server
// is in the process: ns/op, allocs/op and cpu-us/op (the process's CPU
// time per request) are the pair's. streamed/op is the share of responses
// that did not arrive whole with their headers and were streamed.
//
//	go test -run '^$' -bench H2ClientDo -benchmem ./proxy/cluster
func BenchmarkH2ClientDo(b *testing.B) {
	c := localH2(b, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.SetContentType("text/plain")
		ctx.Response.SetBodyString("hello")
	})
	var streamed atomic.Int64
	b.ReportAllocs()
	before := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var req fasthttp.Request
		var resp fasthttp.Response
		req.SetRequestURI("/api/v1/items?page=2")
		req.Header.SetHost("upstream")
		req.Header.Set("X-Request-Id", "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9")
		for pb.Next() {
			var s Body
			if err := c.do(&req, &resp, 5*time.Second, &s); err != nil {
				b.Error(err)
				return
			}
			if s.Active() {
				streamed.Add(1)
				buf := make([]byte, 64)
				for {
					if _, err := s.Read(buf); err != nil {
						break
					}
				}
				s.Close()
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-before).Microseconds())/float64(b.N), "cpu-us/op")
	b.ReportMetric(float64(streamed.Load())/float64(b.N), "streamed/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// localH2 serves h with the proxy's own HTTP/2 server over loopback h2c
// and returns a client of it; both end with tb.
func localH2(tb testing.TB, h fasthttp.RequestHandler) *h2Client {
	srv := h2.NewServer(h, h2.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = srv.ServeConn(c) }()
		}
	}()
	c := newH2Client(poolKey{addr: ln.Addr().String(), connectTimeout: 5 * time.Second, idleTimeout: time.Minute, http2: true}, nil)
	tb.Cleanup(c.tr.CloseIdleConnections)
	return c
}
