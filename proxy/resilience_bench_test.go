package proxy

import (
	"bytes"
	"testing"
)

// BenchmarkResilience is one proxied request, as BenchmarkProxyRequest,
// with and without the resilience machinery: outlier detection, a
// health-checked host set, circuit breakers with a retry budget, a retry
// policy and a rate limit keyed by client address.
func BenchmarkResilience(b *testing.B) {
	up := startUpstream(b, bytes.Repeat([]byte("x"), 64))
	for _, bc := range []struct {
		name string
		cfg  string
	}{
		{"plain", proxyConfig(up)},
		{"resilient", resilientConfig(up)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			hp := newHotPath(b, bc.cfg, "GET", "/users/42?x=1", "www.example.com")
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
