package proxy

import (
	"bytes"
	"strconv"
	"testing"
)

// BenchmarkProxyRequest is one whole proxied request through the listener's
// request path: routing, forwarding headers, request id, balancing, the
// pooled upstream exchange over loopback, response copy, metrics.
func BenchmarkProxyRequest(b *testing.B) {
	for _, size := range []int{64, 16 << 10, 1 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			up := startUpstream(b, bytes.Repeat([]byte("x"), size))
			hp := newHotPath(b, proxyConfig(up), "GET", "/users/42?x=1", "www.example.com")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if st := hp.do(b); st != 200 {
					b.Fatalf("status %d", st)
				}
			}
		})
	}
}

// BenchmarkDirectResponse is a request answered by the proxy itself.
func BenchmarkDirectResponse(b *testing.B) {
	up := startUpstream(b, nil)
	hp := newHotPath(b, proxyConfig(up), "GET", "/static", "www.example.com")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if st := hp.do(b); st != 200 {
			b.Fatalf("status %d", st)
		}
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.Itoa(n>>20) + "MiB"
	case n >= 1<<10:
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}
