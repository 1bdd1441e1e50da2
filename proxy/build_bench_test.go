package proxy

import (
	"context"
	"fmt"
	"testing"

	"github.com/wasmgate/wasmgate/config"
)

// largeConfig has nvh virtual hosts of routesPer routes each and nclusters
// clusters of two endpoints.
func largeConfig(nvh, routesPer, nclusters int) *config.Config {
	cfg := &config.Config{
		Admin:     config.Admin{Address: "off"},
		Listeners: []config.Listener{{Name: "public", Address: "127.0.0.1:0"}},
	}
	for c := 0; c < nclusters; c++ {
		cfg.Clusters = append(cfg.Clusters, config.Cluster{
			Name: fmt.Sprintf("svc-%d", c),
			Endpoints: []config.Endpoint{
				{Address: fmt.Sprintf("10.%d.%d.1:8080", c/256, c%256)},
				{Address: fmt.Sprintf("10.%d.%d.2:8080", c/256, c%256)},
			},
		})
	}
	n := 0
	for v := 0; v < nvh; v++ {
		vh := config.VirtualHost{Name: fmt.Sprintf("vh-%d", v), Domains: []string{fmt.Sprintf("vh%d.example.com", v)}}
		for r := 0; r < routesPer; r++ {
			vh.Routes = append(vh.Routes, config.Route{
				Name:    fmt.Sprintf("r-%d", r),
				Match:   config.RouteMatch{Prefix: fmt.Sprintf("/api/%d/", r), Headers: []config.HeaderMatcher{{Name: "x-tenant", Exact: "a"}}},
				Cluster: fmt.Sprintf("svc-%d", n%nclusters),
			})
			n++
		}
		cfg.VirtualHosts = append(cfg.VirtualHosts, vh)
	}
	cfg.Normalize()
	return cfg
}

// BenchmarkBuildSnapshot is a full build of 10,000 routes and 1,000
// clusters, and a rebuild after one route changed.
func BenchmarkBuildSnapshot(b *testing.B) {
	ctx := context.Background()
	b.Run("full-10k-routes-1k-clusters", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			s := NewServer(Options{})
			cfg := largeConfig(100, 100, 1000)
			b.StartTimer()
			if _, _, err := s.build(ctx, cfg, "1", nil); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
		}
	})
	// The control plane's watcher keeps the decoded value of every
	// unchanged resource: the next configuration shares their arrays.
	b.Run("one-route-changed-watcher", func(b *testing.B) {
		s := NewServer(Options{})
		cfg := largeConfig(100, 100, 1000)
		old, _, err := s.build(ctx, cfg, "1", nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			next := *cfg
			next.VirtualHosts = append([]config.VirtualHost(nil), cfg.VirtualHosts...)
			vh := &next.VirtualHosts[7]
			vh.Routes = append([]config.Route(nil), vh.Routes...)
			vh.Routes[3].Match.Prefix = fmt.Sprintf("/changed/%d/", i)
			b.StartTimer()
			snap, _, err := s.build(ctx, &next, "2", old)
			if err != nil {
				b.Fatal(err)
			}
			old, cfg = snap, &next
		}
	})
	// A file reload parses everything anew: nothing is shared.
	b.Run("one-route-changed-reparsed", func(b *testing.B) {
		s := NewServer(Options{})
		cfg := largeConfig(100, 100, 1000)
		old, _, err := s.build(ctx, cfg, "1", nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			next := largeConfig(100, 100, 1000)
			next.VirtualHosts[7].Routes[3].Match.Prefix = fmt.Sprintf("/changed/%d/", i)
			b.StartTimer()
			snap, _, err := s.build(ctx, next, "2", old)
			if err != nil {
				b.Fatal(err)
			}
			old = snap
		}
	})
}
