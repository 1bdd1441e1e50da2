package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
)

func testCluster(t testing.TB, ps *Pools, cfg config.Cluster) *Cluster {
	t.Helper()
	cfg.Name = "c"
	if cfg.LBPolicy == "" {
		cfg.LBPolicy = config.LBRoundRobin
	}
	c, err := Build(cfg, nil, ps)
	if err != nil {
		t.Fatal(err)
	}
	ps.Retain([]*Cluster{c})
	t.Cleanup(ps.Close)
	return c
}

func eps(addrs ...string) []config.Endpoint {
	out := make([]config.Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = config.Endpoint{Address: a, Weight: 1}
	}
	return out
}

func TestEjectionRebuildsHostSet(t *testing.T) {
	ps := NewPools()
	od := &config.OutlierDetection{Consecutive5xx: 2, ConsecutiveGatewayFailure: -1, BaseEjectionTime: config.Duration(time.Hour),
		MaxEjectionTime: config.Duration(time.Hour), MaxEjectionPercent: 100}
	c := testCluster(t, ps, config.Cluster{Endpoints: eps("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"), OutlierDetection: od})
	bad := c.endpoints[0]
	bad.Observe(500, nil)
	bad.Observe(200, nil) // a success resets the count
	bad.Observe(500, nil)
	if c.hosts.Load().healthy != 4 {
		t.Fatal("ejected after failures that were not in a row")
	}
	bad.Observe(503, nil)
	hs := c.hosts.Load()
	if hs.healthy != 3 || hs.panic {
		t.Fatalf("after the ejection: %d healthy, panic %v", hs.healthy, hs.panic)
	}
	ctx := &fasthttp.RequestCtx{}
	for i := 0; i < 100; i++ {
		if c.Pick(ctx) == bad {
			t.Fatal("picked the ejected endpoint")
		}
	}
	// Two more ejected: 1 of 4 healthy is below the 50% panic threshold.
	for _, e := range c.endpoints[1:3] {
		e.Observe(0, errors.New("connection reset"))
		e.Observe(0, errors.New("connection reset"))
	}
	if hs := c.hosts.Load(); !hs.panic || len(hs.eps) != 4 {
		t.Fatalf("want panic over all 4 endpoints, got %+v", hs)
	}
}

func TestPickOther(t *testing.T) {
	for _, policy := range []string{config.LBRoundRobin, config.LBRingHash, config.LBMaglev} {
		ps := NewPools()
		cfg := config.Cluster{Endpoints: eps("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"), LBPolicy: policy}
		if policy != config.LBRoundRobin {
			cfg.HashPolicy = &config.HashPolicy{Header: "x-key"}
		}
		c := testCluster(t, ps, cfg)
		ctx := &fasthttp.RequestCtx{}
		ctx.Request.Header.Set("x-key", "k")
		for i := 0; i < 20; i++ {
			first := c.Pick(ctx)
			if other := c.PickOther(ctx, first); other == first || other == nil {
				t.Fatalf("%s: PickOther returned the same endpoint", policy)
			}
		}
	}
}

func TestBreakerCounts(t *testing.T) {
	ps := NewPools()
	c := testCluster(t, ps, config.Cluster{Endpoints: eps("127.0.0.1:1"), CircuitBreakers: &config.CircuitBreakers{
		MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 2, MaxRetries: 1}})
	var g1, g2, g3 Guard
	if c.Admit(&g1) != nil || c.Admit(&g2) != nil {
		t.Fatal("refused within max_requests")
	}
	var oe *OverflowError
	if err := c.Admit(&g3); !errors.As(err, &oe) || oe.Breaker != BreakerRequests || Classify(err) != FailureOverflow {
		t.Fatalf("third request: %v", err)
	}
	g1.Release()
	g1.Release() // idempotent
	if c.Admit(&g3) != nil {
		t.Fatal("refused after a release")
	}
	if c.AcquireRetry() != nil || c.AcquireRetry() == nil {
		t.Fatal("max_retries 1 not enforced")
	}
	c.ReleaseRetry()
	if b := c.Breakers(); b.ActiveRequests != 2 || b.ActiveRetries != 0 {
		t.Fatalf("counts %+v", b)
	}
}

// BenchmarkPickObserve is the cluster's part of the request path: admit,
// pick, record the outcome, release; with and without outlier detection,
// health checks and breakers.
func BenchmarkPickObserve(b *testing.B) {
	od := &config.OutlierDetection{Consecutive5xx: 5, ConsecutiveGatewayFailure: 5, BaseEjectionTime: config.Duration(time.Second),
		MaxEjectionTime: config.Duration(time.Minute), MaxEjectionPercent: 10}
	hc := &config.HealthCheck{Type: config.HealthCheckTCP, Interval: config.Duration(time.Hour), Timeout: config.Duration(time.Second),
		HealthyThreshold: 1, UnhealthyThreshold: 1, Initial: config.HealthInitialHealthy}
	for _, bc := range []struct {
		name string
		cfg  config.Cluster
	}{
		{"plain", config.Cluster{}},
		{"resilient", config.Cluster{OutlierDetection: od, HealthCheck: hc, CircuitBreakers: &config.CircuitBreakers{
			MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1 << 20, MaxRetries: 3}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bc.cfg.Endpoints = eps("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
			c := testCluster(b, NewPools(), bc.cfg)
			ctx := &fasthttp.RequestCtx{}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var g Guard
				for pb.Next() {
					if c.Admit(&g) != nil {
						b.Fatal("overflow")
					}
					c.Pick(ctx).Observe(200, nil)
					g.Release()
				}
			})
		})
	}
}
