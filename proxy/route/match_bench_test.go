package route

import (
	"fmt"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/metrics"
)

// benchTable compiles a table of nvh virtual hosts with nroutes routes each,
// the matching route being the last of the last host.
func benchTable(tb testing.TB, nvh, nroutes int) *Table {
	tb.Helper()
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "l", Address: "127.0.0.1:0"}},
		Clusters:  []config.Cluster{{Name: "c", Endpoints: []config.Endpoint{{Address: "127.0.0.1:1"}}}},
	}
	for v := 0; v < nvh; v++ {
		vh := config.VirtualHost{Name: fmt.Sprintf("vh%d", v), Domains: []string{fmt.Sprintf("host%d.example.com", v), fmt.Sprintf("*.zone%d.example.com", v)}}
		for r := 0; r < nroutes; r++ {
			vh.Routes = append(vh.Routes, config.Route{
				Name: fmt.Sprintf("r%d", r),
				Match: config.RouteMatch{
					Prefix:  fmt.Sprintf("/svc%d/", r),
					Headers: []config.HeaderMatcher{{Name: "x-tenant", Exact: "acme"}},
					Methods: []string{"GET"},
				},
				Cluster: "c",
			})
		}
		cfg.VirtualHosts = append(cfg.VirtualHosts, vh)
	}
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	ps := cluster.NewPools()
	c, err := cluster.Build(cfg.Clusters[0], nil, ps)
	if err != nil {
		tb.Fatal(err)
	}
	t, err := Compile(cfg, "l", Deps{Clusters: map[string]*cluster.Cluster{"c": c}, Metrics: metrics.New()})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// BenchmarkMatch finds the virtual host by a wildcard Host and walks every
// route (path prefix, header, method) to the last one.
func BenchmarkMatch(b *testing.B) {
	for _, n := range []struct{ vh, routes int }{{1, 10}, {100, 10}, {10, 100}} {
		b.Run(fmt.Sprintf("vhosts=%d/routes=%d", n.vh, n.routes), func(b *testing.B) {
			t := benchTable(b, n.vh, n.routes)
			var req fasthttp.Request
			req.SetRequestURI(fmt.Sprintf("/svc%d/items/7?q=1", n.routes-1))
			req.Header.SetHost(fmt.Sprintf("API.zone%d.example.com:443", n.vh-1))
			req.Header.Set("X-Tenant", "acme")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				vh := t.Find(req.Header.Host())
				if vh == nil || vh.Match(&req) == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}
