package sidecar_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/mesh/sidecar"
)

func TestSettingsValidate(t *testing.T) {
	good := func() sidecar.Settings {
		return sidecar.Settings{Service: "orders", AppPort: 8080, Inbound: "10.0.0.7:15006", Calls: []string{"payments", "ledger.bank.svc"}}
	}
	for _, tc := range []struct {
		name   string
		change func(*sidecar.Settings)
		want   string // "" valid; else a substring of the error
	}{
		{"defaults", func(*sidecar.Settings) {}, ""},
		{"no service", func(s *sidecar.Settings) { s.Service = "" }, "sidecar.service: is required"},
		{"service not a label", func(s *sidecar.Settings) { s.Service = "Orders_1" }, "sidecar.service: \"Orders_1\" is not a DNS label"},
		{"no app port", func(s *sidecar.Settings) { s.AppPort = 0 }, "sidecar.app_port: must be a port"},
		{"unknown protocol", func(s *sidecar.Settings) { s.Protocol = "smtp" }, "sidecar.protocol: unknown protocol \"smtp\""},
		{"tcp", func(s *sidecar.Settings) { s.Protocol = "tcp" }, ""},
		{"calls every service", func(s *sidecar.Settings) {
			s.Calls, s.TCPCalls = []string{"*"}, []sidecar.TCPCall{{Service: "db"}}
		}, ""},
		{"every service and more", func(s *sidecar.Settings) { s.Calls = []string{"orders", "*"} },
			"sidecar.calls[1]: \"*\" (every service of the mesh) stands alone"},
		{"tcp calls", func(s *sidecar.Settings) {
			s.TCPCalls = []sidecar.TCPCall{{Service: "db", Listen: "127.0.0.1:15432"}, {Service: "cache.shop"}}
		}, ""},
		{"tcp call also over http", func(s *sidecar.Settings) { s.TCPCalls = []sidecar.TCPCall{{Service: "payments.default"}} },
			"sidecar.tcp_calls[0].service: \"payments.default\" is also calls[0]"},
		{"tcp call twice", func(s *sidecar.Settings) {
			s.TCPCalls = []sidecar.TCPCall{{Service: "db"}, {Service: "db.default.svc"}}
		},
			"sidecar.tcp_calls[1].service: \"db.default.svc\" names the same service as tcp_calls[0]"},
		{"tcp call bad listen", func(s *sidecar.Settings) { s.TCPCalls = []sidecar.TCPCall{{Service: "db", Listen: "15432"}} },
			"sidecar.tcp_calls[0].listen: \"15432\" is not host:port"},
		{"tcp calls on one port", func(s *sidecar.Settings) {
			s.TCPCalls = []sidecar.TCPCall{{Service: "db", Listen: "127.0.0.1:15432"}, {Service: "cache", Listen: "127.0.0.1:15432"}}
		}, "sidecar.tcp_calls[1].listen: \"127.0.0.1:15432\" is also the address of tcp_calls[0]"},
		{"tcp call on the outbound port", func(s *sidecar.Settings) {
			s.TCPCalls = []sidecar.TCPCall{{Service: "db", Listen: sidecar.DefaultOutbound}}
		},
			"sidecar.tcp_calls[0].listen: \"127.0.0.1:15001\" is the sidecar's outbound"},
		{"tcp call not a name", func(s *sidecar.Settings) { s.TCPCalls = []sidecar.TCPCall{{Service: "10.0.0.1"}} },
			"sidecar.tcp_calls[0].service: \"10.0.0.1\" is not a service name"},
		{"grpc", func(s *sidecar.Settings) { s.Protocol = "grpc" }, ""},
		{"permissive", func(s *sidecar.Settings) { s.InboundMode = "PERMISSIVE" }, ""},
		{"unknown mode", func(s *sidecar.Settings) { s.InboundMode = "off" }, "sidecar.inbound_mode: unknown mode \"off\""},
		{"unknown outbound policy", func(s *sidecar.Settings) { s.OutboundPolicy = "open" }, "sidecar.outbound_policy: unknown policy"},
		{"hop protocol downstream", func(s *sidecar.Settings) { s.HopProtocol = "downstream" }, ""},
		{"unknown hop protocol", func(s *sidecar.Settings) { s.HopProtocol = "h3" }, "sidecar.hop_protocol: unknown protocol \"h3\""},
		{"detection timeout", func(s *sidecar.Settings) { s.ProtocolDetectionTimeout = config.Duration(time.Minute) }, "sidecar.protocol_detection_timeout: must be 0 (100ms) to 10s"},
		{"a filter twice", func(s *sidecar.Settings) { s.InboundFilters = []string{"waf", "waf"} }, "sidecar.inbound_filters[1]: \"waf\" is also inbound_filters[0]"},
		{"an empty filter", func(s *sidecar.Settings) { s.OutboundFilters = []string{""} }, "sidecar.outbound_filters[0]: is empty"},
		{"inbound filters of a TCP app", func(s *sidecar.Settings) { s.Protocol = "tcp"; s.InboundFilters = []string{"waf"} }, "sidecar.inbound_filters: an app of protocol tcp"},
		{"inbound network filters of an HTTP app", func(s *sidecar.Settings) { s.InboundNetworkFilters = []string{"lines"} }, "sidecar.inbound_network_filters: network filters run on the connections of an app of protocol tcp"},
		{"inbound network filters of a TCP app", func(s *sidecar.Settings) { s.Protocol = "tcp"; s.InboundNetworkFilters = []string{"lines"} }, ""},
		{"repeated network filter", func(s *sidecar.Settings) { s.OutboundNetworkFilters = []string{"lines", "lines"} }, "sidecar.outbound_network_filters[1]: \"lines\" is also outbound_network_filters[0]"},
		{"two threads", func(s *sidecar.Settings) { s.Concurrency = 2 }, ""},
		{"negative threads", func(s *sidecar.Settings) { s.Concurrency = -1 }, "sidecar.concurrency: must be 1 to 1024 threads"},
		{"wildcard announce", func(s *sidecar.Settings) { s.Inbound = "0.0.0.0:15006" }, "sidecar.announce: \"0.0.0.0:15006\" is a wildcard"},
		{"announce given", func(s *sidecar.Settings) { s.Inbound, s.Announce = "0.0.0.0:15006", "10.0.0.7:15006" }, ""},
		// Only StartLocal, which binds the inbound itself, announces the
		// port an inbound of port 0 gets.
		{"inbound of port 0", func(s *sidecar.Settings) { s.Inbound = "127.0.0.1:0" }, "sidecar.announce: \"127.0.0.1:0\" needs a fixed port"},
		{"port 0 with an announce", func(s *sidecar.Settings) { s.Inbound, s.Announce = "0.0.0.0:0", "10.0.0.7:15006" }, ""},
		{"bad outbound", func(s *sidecar.Settings) { s.Outbound = "15001" }, "sidecar.outbound: \"15001\" is not host:port"},
		{"bad call", func(s *sidecar.Settings) { s.Calls = []string{"10.0.0.1"} }, "sidecar.calls[0]: \"10.0.0.1\" is not a service name"},
		{"same call twice", func(s *sidecar.Settings) { s.Calls = []string{"payments", "payments.default.svc"} }, "sidecar.calls[1]: \"payments.default.svc\" names the same service as calls[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.change(&s)
			s.Normalize()
			err := s.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid settings refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestBuild: what a sidecar makes of its settings and the registry is a
// valid configuration that routes each called service by its names to
// its peers over mTLS, expecting their identities.
func TestBuild(t *testing.T) {
	s := sidecar.Settings{Service: "web", AppPort: 8080, Inbound: "10.0.0.1:15006", Calls: []string{"orders", "ledger.bank"}}
	s.Normalize()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := s.Endpoint(); got.Cluster != "web.default" || got.ID != "web:10.0.0.1:15006" || got.Address != "10.0.0.1:15006" {
		t.Fatalf("endpoint = %+v", got)
	}
	cfg := sidecar.Build(&s, sidecar.State{Endpoints: map[string][]registry.Endpoint{
		"orders.default": {{Cluster: "orders.default", ID: "orders:10.0.0.2:15006", Address: "10.0.0.2:15006"}, {Cluster: "orders.default", ID: "orders:10.0.0.3:15006", Address: "10.0.0.3:15006"}},
	}}, "example.org", "")
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("invalid configuration: %v", err)
	}
	byName := map[string]config.Cluster{}
	for _, c := range cfg.Clusters {
		byName[c.Name] = c
	}
	orders := byName["svc.orders.default"]
	if len(orders.Endpoints) != 2 || orders.TLS == nil || !orders.TLS.Mesh || orders.Protocol != config.ProtocolHTTP2 ||
		!slices.Equal(orders.TLS.ExpectedIdentities, []string{"spiffe://example.org/ns/default/sa/orders"}) ||
		orders.OutlierDetection == nil || orders.CircuitBreakers == nil {
		t.Fatalf("orders' cluster = %+v", orders)
	}
	if ledger := byName["svc.ledger.bank"]; len(ledger.Endpoints) != 0 || ledger.Discovery != config.DiscoveryRegistry {
		t.Fatalf("a service with no endpoint yet: %+v", ledger)
	}
	if app := byName["app"]; app.Endpoints[0].Address != "127.0.0.1:8080" {
		t.Fatalf("app cluster = %+v", app)
	}
	domains := map[string][]string{}
	for _, vh := range cfg.VirtualHosts {
		domains[vh.Name] = vh.Domains
	}
	if d := domains["svc.orders.default"]; !slices.Contains(d, "orders") || !slices.Contains(d, "orders.default.svc") ||
		!slices.Contains(d, "10.0.0.2") || !slices.Contains(d, "10.0.0.3") {
		t.Fatalf("orders' names = %v", d)
	}
	if d := domains["svc.ledger.bank"]; slices.Contains(d, "ledger") || !slices.Contains(d, "ledger.bank") {
		t.Fatalf("another namespace's service is not called by its short name: %v", d)
	}
	inbound := cfg.Listeners[0]
	if inbound.TLS == nil || !inbound.TLS.Mesh || cfg.VirtualHosts[0].Filters[0].Native != config.NativeMeshPolicy {
		t.Fatalf("the inbound listener is not mesh mTLS with the policy filter: %+v %+v", inbound, cfg.VirtualHosts[0])
	}
	// Filters tell the two apart by listener_direction, as in Envoy.
	if inbound.TrafficDirection != config.DirectionInbound || cfg.Listeners[1].TrafficDirection != config.DirectionOutbound {
		t.Fatalf("traffic directions: inbound %q, outbound %q", inbound.TrafficDirection, cfg.Listeners[1].TrafficDirection)
	}
	// hop_protocol downstream: calls keep the app's protocol between
	// sidecars.
	s.HopProtocol = sidecar.HopDownstream
	for _, c := range sidecar.Build(&s, sidecar.State{}, "example.org", "").Clusters {
		if c.Name == "svc.orders.default" && c.Protocol != config.ProtocolDownstream {
			t.Errorf("with hop_protocol downstream, orders' cluster speaks %q", c.Protocol)
		}
	}
}

// Two builds share nothing a normalization writes to: sidecars in one
// process build and normalize their configurations concurrently.
func TestBuildsShareNoDefaults(t *testing.T) {
	s := sidecar.Settings{Service: "web", AppPort: 8080, Inbound: "10.0.0.1:15006", Calls: []string{"orders"}}
	s.Normalize()
	st := sidecar.State{Endpoints: map[string][]registry.Endpoint{
		"orders.default": {{Cluster: "orders.default", ID: "orders:10.0.0.2:15006", Address: "10.0.0.2:15006"}},
	}}
	a, b := sidecar.Build(&s, st, "example.org", ""), sidecar.Build(&s, st, "example.org", "")
	seen := map[any]bool{}
	for _, cfg := range []*config.Config{a, b} {
		for _, c := range cfg.Clusters {
			for _, p := range []any{c.OutlierDetection, c.CircuitBreakers} {
				if p != nil && !reflect.ValueOf(p).IsNil() && seen[p] {
					t.Fatalf("cluster %s shares %T with another build", c.Name, p)
				}
				seen[p] = true
			}
		}
		for _, vh := range cfg.VirtualHosts {
			for _, r := range vh.Routes {
				if r.Retry != nil && seen[r.Retry] {
					t.Fatalf("a route shares its retry policy with another build")
				}
				seen[r.Retry] = true
			}
		}
	}
}

// TestBuildTCP: a TCP app has no HTTP inbound (the relay serves it); its
// TCP callees are the relay's too, not the outbound listener's; an
// endpoint address shared by two services, or on loopback, routes no
// intercepted call.
func TestBuildTCP(t *testing.T) {
	s := sidecar.Settings{Service: "db", Protocol: "tcp", AppPort: 5432, Inbound: "10.0.0.9:15006",
		Calls: []string{"orders", "audit"}, TCPCalls: []sidecar.TCPCall{{Service: "cache", Listen: "127.0.0.1:16379"}}}
	s.Normalize()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := s.Interest().Services; !slices.Equal(got, []string{"audit.default", "cache.default", "orders.default"}) {
		t.Fatalf("interest = %v", got)
	}
	cfg := sidecar.Build(&s, sidecar.State{Endpoints: map[string][]registry.Endpoint{
		"orders.default": {{ID: "orders:10.0.0.2:15006", Address: "10.0.0.2:15006"}, {ID: "orders:10.0.0.5:15006", Address: "10.0.0.5:15006"}},
		"audit.default":  {{ID: "audit:10.0.0.5:15007", Address: "10.0.0.5:15007"}, {ID: "audit:127.0.0.1:15008", Address: "127.0.0.1:15008"}},
		"cache.default":  {{ID: "cache:10.0.0.8:15006", Address: "10.0.0.8:15006"}},
	}}, "example.org", "")
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("invalid configuration: %v", err)
	}
	if len(cfg.Listeners) != 1 || cfg.Listeners[0].Name != sidecar.OutboundListener {
		t.Fatalf("listeners = %+v, want the outbound only", cfg.Listeners)
	}
	for _, c := range cfg.Clusters {
		if c.Name == sidecar.AppCluster || strings.Contains(c.Name, "cache") {
			t.Fatalf("cluster %s in a TCP app's HTTP configuration", c.Name)
		}
	}
	domains := map[string][]string{}
	for _, vh := range cfg.VirtualHosts {
		domains[vh.Name] = vh.Domains
	}
	if d := domains["svc.orders.default"]; !slices.Contains(d, "10.0.0.2") || slices.Contains(d, "10.0.0.5") {
		t.Fatalf("orders' domains = %v", d)
	}
	if d := domains["svc.audit.default"]; slices.Contains(d, "10.0.0.5") || slices.Contains(d, "127.0.0.1") {
		t.Fatalf("audit's domains = %v", d)
	}
}

func TestParseTCPCalls(t *testing.T) {
	got, err := sidecar.ParseTCPCalls([]string{"db=15432", "cache.shop=10.0.0.1:6379", "queue"})
	want := []sidecar.TCPCall{{Service: "db", Listen: "127.0.0.1:15432"}, {Service: "cache.shop", Listen: "10.0.0.1:6379"}, {Service: "queue"}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("got %+v %v, want %+v", got, err, want)
	}
	if _, err := sidecar.ParseTCPCalls([]string{"=15432"}); err == nil {
		t.Fatal("a call without a service was accepted")
	}
}

// TestNetworkPlugins: the control plane's Wasm plugins of type network
// run on the relay's connections of their side (a TCP app's inbound, the
// app's TCP calls and its connections passed outside the mesh), before
// the sidecar's own; the proxy loads them only when the side has such
// connections, and never as HTTP filters.
func TestNetworkPlugins(t *testing.T) {
	sha := strings.Repeat("a", 64)
	st := sidecar.State{Wasm: []policy.WasmPlugin{
		{Name: "in-http", Mode: policy.WasmInbound, Type: policy.WasmHTTP, SHA256: sha},
		{Name: "in-net", Mode: policy.WasmInbound, Type: policy.WasmNetwork, SHA256: sha},
		{Name: "out-http", Mode: policy.WasmOutbound, Type: policy.WasmHTTP, SHA256: sha},
		{Name: "out-net", Mode: policy.WasmOutbound, Type: policy.WasmNetwork, SHA256: sha},
	}}
	refs := func(list []config.FilterRef) string {
		var names []string
		for _, r := range list {
			names = append(names, r.Plugin)
		}
		return strings.Join(names, ",")
	}
	for _, tc := range []struct {
		name             string
		s                sidecar.Settings
		plugins, in, out string
	}{
		{"http app, no TCP calls", sidecar.Settings{Service: "web", AppPort: 8080, Calls: []string{"orders"}},
			"mesh.in-http,mesh.out-http", "", ""},
		// Connections outside the mesh are relayed: the outbound's
		// network plugins run on them.
		{"http app, allow_any", sidecar.Settings{Service: "web", AppPort: 8080, Calls: []string{"orders"}, OutboundPolicy: sidecar.AllowAny},
			"mesh.in-http,mesh.out-http,mesh.out-net", "", "mesh.out-net"},
		{"tcp app with TCP calls", sidecar.Settings{Service: "db", AppPort: 5432, Protocol: sidecar.ProtocolTCP,
			TCPCalls: []sidecar.TCPCall{{Service: "cache"}}, InboundNetworkFilters: []string{"lines"}, OutboundNetworkFilters: []string{"audit"}},
			"mesh.in-net,mesh.out-http,mesh.out-net", "mesh.in-net,lines", "mesh.out-net,audit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.Normalize()
			cfg := sidecar.Build(&s, st, "example.org", "")
			var plugins []string
			for _, p := range cfg.Plugins {
				plugins = append(plugins, p.Name)
			}
			if got := strings.Join(plugins, ","); got != tc.plugins {
				t.Errorf("plugins %q, want %q", got, tc.plugins)
			}
			for _, vh := range cfg.VirtualHosts {
				for _, f := range vh.Filters {
					if strings.HasSuffix(f.Plugin, "-net") {
						t.Errorf("virtual host %s runs network plugin %s as an HTTP filter", vh.Name, f.Plugin)
					}
				}
			}
			in, out := sidecar.NetworkFilters(&s, st)
			if refs(in) != tc.in || refs(out) != tc.out {
				t.Errorf("network filters: inbound %q, outbound %q; want %q, %q", refs(in), refs(out), tc.in, tc.out)
			}
		})
	}
}

// TestServiceRoutes: a service route of a called service becomes routes
// of its virtual host, each rule in order, then every other call to any
// endpoint; a version a backend names becomes a cluster of the endpoints
// of that version, with their identities.
func TestServiceRoutes(t *testing.T) {
	s := sidecar.Settings{Service: "web", AppPort: 8080, Inbound: "10.0.0.1:15006", Calls: []string{"orders"}}
	s.Normalize()
	st := sidecar.State{
		Endpoints: map[string][]registry.Endpoint{"orders.default": {
			{Cluster: "orders.default", ID: "orders:10.0.0.2:15006", Address: "10.0.0.2:15006", Version: "v1"},
			{Cluster: "orders.default", ID: "orders-next:10.0.0.3:15006", Address: "10.0.0.3:15006", Version: "v2"},
		}},
		Routes: map[string][]policy.ServiceRoute{"orders.default": {{Name: "canary", Namespace: "default", Service: "orders", Rules: []policy.RouteRule{
			{Match: &policy.RouteMatch{Headers: []config.HeaderMatcher{{Name: "x-canary", Exact: "1"}}}, Backends: []policy.RouteBackend{{Version: "v2", Weight: 1}},
				Timeout: config.Duration(2 * time.Second), Retries: &policy.RouteRetries{Attempts: 3, StatusCodes: []int{409}},
				Fault: &config.Fault{Abort: &config.FaultAbort{Status: 503, Percent: 5}}},
			{Backends: []policy.RouteBackend{{Version: "v1", Weight: 90}, {Version: "v2", Weight: 10}}},
			{Match: &policy.RouteMatch{Prefix: "/old/"}, Backends: []policy.RouteBackend{{Version: "v1"}},
				Rewrite: &policy.RouteRewrite{URI: "/new/", Authority: "orders.internal"}, Mirror: &policy.RouteMirror{Version: "v3"}},
			{Match: &policy.RouteMatch{Path: "/a.b"}, Backends: []policy.RouteBackend{{}}, Rewrite: &policy.RouteRewrite{URI: "/c$1"},
				Headers: &policy.RouteHeaders{Request: config.HeaderMutation{Set: []config.Header{{Name: "x-route", Value: "ab"}}},
					Response: config.HeaderMutation{Remove: []string{"server"}}}},
			{Match: &policy.RouteMatch{Prefix: "/moved/"}, Redirect: &config.Redirect{PrefixRewrite: "/v2/", Status: 308}},
			{Match: &policy.RouteMatch{PathRegex: "/items/[0-9]+", Methods: []string{"POST"}, QueryParams: []config.QueryMatcher{{Name: "dry", Exact: "1"}}},
				Backends: []policy.RouteBackend{{Version: "v2"}}, Rewrite: &policy.RouteRewrite{URI: "/item"}},
		},
			Subsets: []policy.RouteSubset{{Version: "v2", TrafficPolicy: &policy.TrafficPolicy{LoadBalancer: config.LBRandom}}},
		}}},
	}
	cfg := sidecar.Build(&s, st, "example.org", "")
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the configuration is invalid: %v", err)
	}
	var vh *config.VirtualHost
	for i := range cfg.VirtualHosts {
		if cfg.VirtualHosts[i].Name == "svc.orders.default" {
			vh = &cfg.VirtualHosts[i]
		}
	}
	if vh == nil || len(vh.Routes) != 7 {
		t.Fatalf("orders' virtual host: %+v", vh)
	}
	pinned, split, rest := vh.Routes[0], vh.Routes[1], vh.Routes[6]
	// A method, query and path pattern are the proxy route's match; a
	// rewrite of a pattern's match replaces the whole path.
	if m, rw := vh.Routes[5].Match, vh.Routes[5].RegexRewrite; m.PathRegex != "/items/[0-9]+" || m.Prefix != "" || len(m.Methods) != 1 || m.Methods[0] != "POST" ||
		len(m.Query) != 1 || m.Query[0] != (config.QueryMatcher{Name: "dry", Exact: "1"}) || rw == nil || *rw != (config.RegexRewrite{Pattern: "^.*$", Substitution: "/item"}) {
		t.Errorf("the rule of a pattern, a method and a query: %+v", vh.Routes[5])
	}
	if rd := vh.Routes[4]; rd.Redirect == nil || rd.Redirect.Status != 308 || rd.Redirect.PrefixRewrite != "/v2/" || rd.Cluster != "" || len(rd.WeightedClusters) != 0 {
		t.Errorf("the redirecting rule: %+v", rd)
	}
	if h := vh.Routes[3]; len(h.RequestHeaders.Set) != 1 || h.RequestHeaders.Set[0].Value != "ab" || len(h.ResponseHeaders.Remove) != 1 {
		t.Errorf("the rule's headers: %+v", h)
	}
	// A prefix is rewritten as a prefix, a path whole (a "$" in the new
	// path is no group), and a mirror copies to its version's cluster,
	// which has no endpoint: a version with none.
	if rw := vh.Routes[2]; rw.PrefixRewrite != "/new/" || rw.HostRewrite != "orders.internal" || len(rw.Mirrors) != 1 || rw.Mirrors[0].Cluster != "svc.orders.default_v3" {
		t.Errorf("the rewriting rule: %+v", rw)
	}
	if rw := vh.Routes[3]; rw.RegexRewrite == nil || *rw.RegexRewrite != (config.RegexRewrite{Pattern: `^/a\.b$`, Substitution: "/c$$1"}) {
		t.Errorf("the path rule: %+v", rw)
	}
	if pinned.Cluster != "svc.orders.default_v2" || pinned.Match.Headers[0].Name != "x-canary" || pinned.Timeout.D() != 2*time.Second ||
		pinned.Retry == nil || pinned.Retry.NumRetries != 3 || pinned.Fault == nil || pinned.Fault.Abort.Status != 503 ||
		!slices.Equal(pinned.Retry.RetryOn, []string{config.RetryOnConnectFailure, config.RetryOnReset, config.RetryOnGatewayError, config.RetryOnRetriableStatusCodes}) ||
		!slices.Equal(pinned.Retry.RetriableStatusCodes, []int{409}) {
		t.Errorf("the pinned rule: %+v", pinned)
	}
	if len(split.WeightedClusters) != 2 || split.WeightedClusters[0] != (config.WeightedCluster{Name: "svc.orders.default_v1", Weight: 90}) ||
		split.WeightedClusters[1] != (config.WeightedCluster{Name: "svc.orders.default_v2", Weight: 10}) {
		t.Errorf("the split rule: %+v", split.WeightedClusters)
	}
	if rest.Cluster != "svc.orders.default" || rest.Match.Prefix != "/" {
		t.Errorf("the last route: %+v", rest)
	}
	clusters := map[string]config.Cluster{}
	for _, c := range cfg.Clusters {
		clusters[c.Name] = c
	}
	for name, want := range map[string]string{"svc.orders.default_v1": "10.0.0.2:15006", "svc.orders.default_v2": "10.0.0.3:15006"} {
		c := clusters[name]
		if len(c.Endpoints) != 1 || c.Endpoints[0].Address != want || c.TLS == nil || !c.TLS.Mesh || len(c.TLS.ExpectedIdentities) != 1 {
			t.Errorf("cluster %s: %+v", name, c)
		}
	}
	if n := len(clusters["svc.orders.default"].Endpoints); n != 2 {
		t.Errorf("orders' whole cluster has %d endpoints, want 2", n)
	}
	// v2's subset policy is v2's alone.
	if v2, v1 := clusters["svc.orders.default_v2"].LBPolicy, clusters["svc.orders.default_v1"].LBPolicy; v2 != config.LBRandom || v1 != config.LBLeastRequest {
		t.Errorf("load balancers: v2 %q, v1 %q", v2, v1)
	}
}

// TestTrafficPolicy: a service route's traffic policy replaces the mesh's
// defaults on every cluster of the service, its versions' included, and
// on no other.
func TestTrafficPolicy(t *testing.T) {
	s := sidecar.Settings{Service: "web", AppPort: 8080, Inbound: "10.0.0.1:15006", Calls: []string{"orders", "payments"}}
	s.Normalize()
	st := sidecar.State{
		Endpoints: map[string][]registry.Endpoint{"orders.default": {{Cluster: "orders.default", ID: "orders:10.0.0.2:15006", Address: "10.0.0.2:15006", Version: "v1"}}},
		Routes: map[string][]policy.ServiceRoute{"orders.default": {{Name: "orders", Namespace: "default", Service: "orders",
			Rules: []policy.RouteRule{{Backends: []policy.RouteBackend{{Version: "v1", Weight: 1}}}},
			TrafficPolicy: &policy.TrafficPolicy{LoadBalancer: config.LBRingHash, HashPolicy: &config.HashPolicy{Header: "x-user"},
				OutlierDetection: &config.OutlierDetection{Consecutive5xx: 3}, ConnectionPool: &config.CircuitBreakers{MaxRequests: 100},
				ConnectTimeout: config.Duration(time.Second)}}}},
	}
	cfg := sidecar.Build(&s, st, "example.org", "")
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the configuration is invalid: %v", err)
	}
	for _, c := range cfg.Clusters {
		ours := c.Name == "svc.orders.default" || c.Name == "svc.orders.default_v1"
		set := c.LBPolicy == config.LBRingHash && c.HashPolicy != nil && c.HashPolicy.Header == "x-user" &&
			c.OutlierDetection.Consecutive5xx == 3 && c.CircuitBreakers.MaxRequests == 100 && c.ConnectTimeout.D() == time.Second
		if ours != set {
			t.Errorf("cluster %s: lb %s, outlier %+v, breakers %+v", c.Name, c.LBPolicy, c.OutlierDetection, c.CircuitBreakers)
		}
	}
}

// TestServiceEntriesBuild: under registry_only, the hosts of the service
// entries go to the passthrough, everything else outside still gets 502;
// under allow_any everything goes.
func TestServiceEntriesBuild(t *testing.T) {
	s := sidecar.Settings{Service: "web", AppPort: 8080, Inbound: "10.0.0.1:15006"}
	s.Normalize()
	st := sidecar.State{Entries: []policy.ServiceEntry{
		{Name: "b", Namespace: "default", Hosts: []string{"api.example.com", "*.payments.test"}},
		{Name: "a", Namespace: "default", Hosts: []string{"api.example.com"}},
	}}
	cfg := sidecar.Build(&s, st, "example.org", "127.0.0.1:15999")
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, vh := range cfg.VirtualHosts {
		names = append(names, vh.Name+"="+strings.Join(vh.Domains, ","))
		if vh.Name == "service_entries" && vh.Routes[0].Cluster != sidecar.PassthroughCluster {
			t.Errorf("service entries' route: %+v", vh.Routes[0])
		}
		if vh.Name == "outside" && vh.Routes[0].DirectResponse == nil {
			t.Errorf("outside is not refused: %+v", vh.Routes[0])
		}
	}
	if got := strings.Join(names, " "); got != "inbound=* service_entries=*.payments.test,api.example.com outside=*" {
		t.Errorf("virtual hosts %q", got)
	}
	// Without the forwarder (it could not start), the entries' hosts are
	// refused as the rest.
	if cfg := sidecar.Build(&s, st, "example.org", ""); len(cfg.VirtualHosts) != 2 {
		t.Errorf("without a forwarder: %d virtual hosts", len(cfg.VirtualHosts))
	}
}
