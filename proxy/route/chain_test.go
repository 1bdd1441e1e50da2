package route_test

import (
	"context"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/route"
)

// namedFilter stands for a plugin: a factory that only has a name.
type namedFilter string

func (n namedFilter) Name() string                                    { return string(n) }
func (namedFilter) NewStream(*filter.Exchange) (filter.Stream, error) { return nil, context.Canceled }

// TestChainOrder: a route's chain is one ordered list, native filters at
// their default places unless the configuration places them.
func TestChainOrder(t *testing.T) {
	const head = `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "127.0.0.1:1"}]}]
plugins: [{name: p1, file: p1.wasm}, {name: p2, file: p2.wasm}]
virtual_hosts:
  - name: v
    domains: ["*"]
    response_headers: {remove: [server]}
`
	cases := []struct {
		name, vhost, route string
		want               string
	}{
		{"defaults, nothing configured", "", "", "forwarded"},
		{"defaults", "", "rate_limit: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 1s}\n        filters: [{plugin: p1}, {plugin: p2}]",
			"forwarded rate_limit p1 p2 headers"},
		{"placed", "filters: [{plugin: p1}, {native: headers}]",
			"rate_limit: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 1s}\n        filters: [{native: rate_limit}, {plugin: p2}, {native: forwarded}]",
			"p1 headers rate_limit p2 forwarded"},
		{"placed but not configured", "", "filters: [{native: rate_limit}, {plugin: p1}]", "forwarded p1 headers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y := head
			if tc.vhost != "" {
				y += "    " + tc.vhost + "\n"
			}
			y += "    routes:\n      - match: {prefix: /}\n        cluster: a\n"
			if tc.route != "" {
				y += "        " + tc.route + "\n"
			}
			if tc.name == "defaults, nothing configured" {
				y = strings.Replace(y, "    response_headers: {remove: [server]}\n", "", 1)
			}
			cfg, err := config.Parse([]byte(y), "chain.yaml")
			if err != nil {
				t.Fatal(err)
			}
			c, err := cluster.Build(cfg.Clusters[0], nil, cluster.NewPools())
			if err != nil {
				t.Fatal(err)
			}
			tbl, err := route.Compile(cfg, "main", route.Deps{
				Clusters: map[string]*cluster.Cluster{"a": c}, Metrics: metrics.New(),
				Filter: func(ref config.FilterRef, _, _ string) (filter.Factory, error) { return namedFilter(ref.Plugin), nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			var req fasthttp.Request
			req.SetRequestURI("/")
			var names []string
			r := tbl.Find([]byte("x")).Match(&req)
			for _, f := range r.Filters {
				names = append(names, f.Name())
			}
			if got := strings.Join(names, " "); got != tc.want {
				t.Errorf("chain %q, want %q", got, tc.want)
			}
			if wantBody := strings.Contains(tc.want, "p"); r.BodyFilters != wantBody {
				t.Errorf("BodyFilters %v, want %v", r.BodyFilters, wantBody)
			}
		})
	}
}
