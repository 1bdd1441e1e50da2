package ca

import (
	"context"
	"crypto/x509"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSign issues one certificate per iteration: a renewal
// authenticated by the current certificate, as every proxy asks once per
// half-life. It includes the CSR's parsing and checks, the peer's
// verification, the signature and the etcd writes.
func BenchmarkSign(b *testing.B) {
	c, _ := newCA(b, Options{})
	key := p256(b)
	iss, err := c.Sign(context.Background(), SignRequest{CSR: csrFor(b, key), JoinToken: token(b, c, "shop", "orders", 1), Proxy: "p"})
	if err != nil {
		b.Fatal(err)
	}
	peer := parseChain(b, iss.CertPEM)
	csr := csrFor(b, key)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Sign(context.Background(), SignRequest{CSR: csr, Peer: peer, Proxy: "p"}); err != nil {
			b.Fatal(err)
		}
	}
}

// burst has n proxies, each with a join token of its own, ask for their
// first certificate at once, and returns how long the burst took and how
// far the heap grew above where it started.
func burst(tb testing.TB, n int) (time.Duration, uint64) {
	c, _ := newCA(tb, Options{})
	ctx := context.Background()
	reqs := make([]SignRequest, n)
	for i := range reqs {
		reqs[i] = SignRequest{CSR: csrFor(tb, p256(tb)), JoinToken: token(tb, c, "shop", "orders", 1), Proxy: "proxy-" + itoa(i)}
	}
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var first atomic.Value
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			iss, err := c.Sign(ctx, reqs[i])
			if err == nil {
				_, err = x509.ParseCertificate(parseChain(tb, iss.CertPEM)[0].Raw)
			}
			if err != nil {
				failed.Add(1)
				first.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(stop)
	<-sampled
	if n := failed.Load(); n > 0 {
		tb.Fatalf("%d of %d requests failed, first: %v", n, len(reqs), first.Load())
	}
	st, err := c.Status(ctx)
	if err != nil || len(st.Proxies) != n {
		tb.Fatalf("status lists %d proxies, want %d (%v)", len(st.Proxies), n, err)
	}
	grown := uint64(0)
	if p := peak.Load(); p > base.HeapInuse {
		grown = p - base.HeapInuse
	}
	return took, grown
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// TestBurst1000 has 1,000 proxies join at once: every one gets its
// certificate, within seconds, and the heap stays bounded.
func TestBurst1000(t *testing.T) {
	took, grown := burst(t, 1000)
	t.Logf("1000 concurrent CSRs: %s, heap grew %.1f MiB at its peak", took.Round(time.Millisecond), float64(grown)/(1<<20))
	if grown > 256<<20 {
		t.Fatalf("the heap grew by %d MiB for 1000 requests", grown>>20)
	}
}

// BenchmarkBurst1000 reports the time of a burst of 1,000 first
// certificates and the heap's growth at its peak.
func BenchmarkBurst1000(b *testing.B) {
	var total time.Duration
	var grown uint64
	for b.Loop() {
		took, g := burst(b, 1000)
		total += took
		grown = max(grown, g)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/burst")
	b.ReportMetric(float64(grown)/(1<<20), "peak-heap-MiB")
}
