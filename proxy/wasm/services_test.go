package wasm

import (
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

func sharedValueOf(m *Manager, vm, key string) int {
	m.shared.mu.Lock()
	defer m.shared.mu.Unlock()
	v := m.shared.data[vm][key]
	if v == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(v.value))
	return n
}

// seedShared sets a shared data key as a plugin's first write would.
func seedShared(m *Manager, vm, key, value string) {
	m.shared.mu.Lock()
	defer m.shared.mu.Unlock()
	if m.shared.data[vm] == nil {
		m.shared.data[vm] = map[string]*sharedValue{}
	}
	m.shared.data[vm][key] = &sharedValue{value: []byte(value), cas: 1}
}

func gather(t *testing.T, reg *prometheus.Registry, name, plugin string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "plugin" && l.GetValue() == plugin {
					return m
				}
			}
		}
	}
	return nil
}

// TestSharedServices covers metrics, shared data with CAS, shared queues
// and ticks, under concurrent requests.
func TestSharedServices(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newTestManager(t, withRegistry(reg))
	set := prepare(t, m, testPlugin("shared", "shared", func(p *config.Plugin) { p.PoolSize = 3 }))
	f := factoryOf(t, set, "shared")
	// The instances add what they dequeue to "dequeued" with CAS, and a
	// missing key is written unconditionally (cas 0, as in Envoy): two
	// instances' first additions at once would lose one. The key exists
	// before they race, as a plugin would create it.
	seedShared(m, "shared", "dequeued", "0")

	// The first request creates the counter. Two first writers would both
	// find it missing and write it with cas 0, which means unconditionally
	// (as in Envoy): a plugin creates its keys before racing on them.
	if _, resp := run(t, f, newExchange("http://example.com/first")); resp != filter.Continue {
		t.Fatalf("response status %v", resp)
	}
	const workers, each = 4, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]bool{}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				x := newExchange(fmt.Sprintf("http://example.com/p%d", i))
				_, resp := run(t, f, x)
				if resp != filter.Continue {
					t.Errorf("response status %v", resp)
					return
				}
				mu.Lock()
				seen[string(x.Ctx.Response.Header.Peek("x-hits"))] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	const total = workers*each + 1
	if len(seen) != total-1 {
		t.Errorf("%d distinct hit counts over %d requests: the CAS loop lost updates", len(seen), total)
	}
	if got := sharedValueOf(m, "shared", "hits"); got != total {
		t.Errorf("hits = %d, want %d", got, total)
	}
	waitFor(t, func() bool { return sharedValueOf(m, "shared", "dequeued") == total })
	waitFor(t, func() bool { return sharedValueOf(m, "shared", "ticks") >= 3 })

	if c := gather(t, reg, "wasm_requests", "shared"); c == nil || c.GetCounter().GetValue() != total {
		t.Errorf("counter wasm_requests = %v, want %d", c, total)
	}
	if g := gather(t, reg, "wasm_inflight_hint", "shared"); g == nil || g.GetGauge().GetValue() != total {
		t.Errorf("gauge = %v, want %d", g, total)
	}
	h := gather(t, reg, "wasm_path_len", "shared")
	if h == nil || h.GetHistogram().GetSampleCount() != total {
		t.Fatalf("histogram = %v", h)
	}
	if g := gather(t, reg, "wasmgate_wasm_instances", "shared"); g == nil || g.GetGauge().GetValue() < 1 || g.GetGauge().GetValue() > 3 {
		t.Errorf("instances gauge = %v", g)
	}
}

func TestProperties(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("props", "features", func(p *config.Plugin) { p.RootID = "rid" }))
	set.UseConfig(&config.Config{
		Listeners: []config.Listener{{Name: "main", TrafficDirection: config.DirectionInbound}},
		VirtualHosts: []config.VirtualHost{{Name: "vh", Routes: []config.Route{{Name: "route-a",
			Metadata: &config.Metadata{FilterMetadata: map[string]map[string]any{
				"wasmgate": {"team": "payments", "tier": 1},
			}}}}}},
		Clusters: []config.Cluster{{Name: "backend",
			Metadata: &config.Metadata{FilterMetadata: map[string]map[string]any{"lb": {"canary": true}}}}},
	})
	f := factoryOf(t, set, "props")
	tls := &filter.TLSInfo{Version: "TLSv1.3", ServerName: "sni.example", PeerPresented: true, PeerVerified: true,
		PeerSubject: "CN=client", PeerURISANs: []string{"spiffe://td/ns/a/sa/b"}, PeerDNSSANs: []string{"client.example"},
		PeerSHA256: "abcd", LocalSubject: "CN=proxy"}
	tests := []struct {
		path, want string
		tls        bool
	}{
		{"request.path", "/a/b?q=1", false},
		{"request.url_path", "/a/b", false},
		{"request.query", "q=1", false},
		{"request.host", "example.com", false},
		{"request.method", "GET", false},
		{"request.scheme", "http", false},
		{"request.scheme", "https", true},
		{"request.id", "req-1", false},
		{"request.protocol", "HTTP/1.1", false},
		{"request.time", "set", false},
		{"request.useragent", "ua/1", false},
		{"request.headers", "7", false},
		{"source.address", "10.0.0.7:40000", false},
		{"source.port", "40000", false},
		{"destination.address", "192.0.2.1:8443", false},
		{"destination.port", "8443", false},
		{"connection.id", "42", false},
		{"connection.mtls", "false", false},
		{"connection.mtls", "true", true},
		{"connection.requested_server_name", "sni.example", true},
		{"connection.tls_version", "TLSv1.3", true},
		{"connection.subject_peer_certificate", "CN=client", true},
		{"connection.subject_local_certificate", "CN=proxy", true},
		{"connection.uri_san_peer_certificate", "spiffe://td/ns/a/sa/b", true},
		{"connection.dns_san_peer_certificate", "client.example", true},
		{"connection.sha256_peer_certificate_digest", "abcd", true},
		{"source.principal", "spiffe://td/ns/a/sa/b", true},
		{"source.principal", "error:error status returned by host: not found", false},
		{"route_metadata.filter_metadata.wasmgate.team", "payments", false},
		// A namespace is a map (header-map format), numbers doubles.
		{"route_metadata.filter_metadata.wasmgate", "\x02\x00\x00\x00\x04\x00\x00\x00\b\x00\x00\x00\x04\x00\x00\x00\b\x00\x00\x00team\x00payments\x00tier\x00\x00\x00\x00\x00\x00\x00\xf0?\x00", false},
		{"route_metadata.filter_metadata.other.team", "error:error status returned by host: not found", false},
		{"cluster_metadata.filter_metadata.lb.canary", "\x01", false}, // a bool: one byte
		{"connection.requested_server_name", "error:error status returned by host: not found", false},
		{"plugin_name", "props", false},
		{"plugin_root_id", "rid", false},
		{"plugin_vm_id", "props", false},
		{"route_name", "route-a", false},
		{"cluster_name", "backend", false},
		{"xds.virtual_host_name", "vh", false},
		{"listener_direction", "\x01\x00\x00\x00\x00\x00\x00\x00", false}, // INBOUND, an int64
		{"xds.listener_direction", "\x01\x00\x00\x00\x00\x00\x00\x00", false},
		{"node.id", "node-1", false},
		{"node.metadata.zone", "z1", false},
		{"upstream.address", "error:error status returned by host: not found", false},
		{"no.such.thing", "error:error status returned by host: not found", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/tls=%v", tt.path, tt.tls), func(t *testing.T) {
			x := newExchange("http://example.com/a/b?q=1", "x-prop", tt.path, "user-agent", "ua/1")
			if tt.tls {
				x.Conn.TLS = tls
			}
			run(t, f, x)
			if got := string(x.Ctx.Request.Header.Peek("x-prop-value")); got != tt.want {
				t.Errorf("%s = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
	t.Run("set filter state", func(t *testing.T) {
		x := newExchange("http://example.com/", "x-set-prop", "my.key=v1")
		run(t, f, x)
		if got := string(x.FilterState["wasm.my.key"]); got != "v1" {
			t.Fatalf("filter state = %q", got)
		}
	})
}
