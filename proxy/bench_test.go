package proxy

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/wasmgate/wasmgate/proxy/wasm"
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

// BenchmarkFirstPartyFilters is a request answered by the proxy itself
// through the first-party Wasm filters (the module holding the three, in
// one VM), with the suite's configurations: the filters' own cost per
// request, with no socket in the way. Run with -cpu 1.
func BenchmarkFirstPartyFilters(b *testing.B) {
	for _, set := range firstPartySets {
		b.Run(set.name, func(b *testing.B) {
			hp := firstPartyHotPath(b, set.filters)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if st := hp.do(b); st != 200 {
					b.Fatalf("status %d", st)
				}
			}
		})
	}
}

// firstPartySets are the sets of first-party filters measured: none,
// each alone, and the three chained.
var firstPartySets = []struct {
	name    string
	filters []string
}{
	{"none", nil},
	{"telemetry", []string{"telemetry"}},
	{"authz", []string{"authz"}},
	{"encryption", []string{"encryption"}},
	{"chain", []string{"telemetry", "authz", "encryption"}},
}

// firstPartyHotPath is a direct_response route through the named
// first-party filters, from the module holding the three in one VM, with
// the benchmark suite's configurations, warmed by 1,000 requests. The
// request carries the header the encryption filter seals.
func firstPartyHotPath(tb testing.TB, filters []string) *hotPath {
	tb.Helper()
	cfg := `admin: {address: "off"}
listeners:
  - {name: public, address: 127.0.0.1:0}
plugins:
  - name: telemetry
    file: ../plugins/firstparty/firstparty.wasm
    vm_id: firstparty
    root_id: telemetry
    config: {"sample_rate": 0.1}
  - name: authz
    file: ../plugins/firstparty/firstparty.wasm
    vm_id: firstparty
    root_id: authz
    config: {"rules": [{"name": "anonymous", "action": "allow", "principals": [""]}], "default": "deny"}
  - name: encryption
    file: ../plugins/firstparty/firstparty.wasm
    vm_id: firstparty
    root_id: encryption
    config: {"default": {"require": "none"}, "keys": {"k1": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, "active_key": "k1", "encrypt_headers": ["x-secret"]}
virtual_hosts:
  - name: default
    domains: ["*"]
    routes:
      - name: static
        match: {prefix: /}
        direct_response: {status: 200, body: "static\n"}
`
	if len(filters) > 0 {
		cfg += "        filters:\n"
		for _, f := range filters {
			cfg += "          - plugin: " + f + "\n"
		}
	}
	host, err := wasm.NewHost(wasm.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	hp := newHotPathWith(tb, Options{Plugins: host}, cfg, "GET", "/static", "www.example.com")
	hp.tpl.Header.Set("x-secret", "4111-1111-1111-1111")
	for range 1000 {
		if st := hp.do(tb); st != 200 {
			tb.Fatalf("status %d", st)
		}
	}
	return hp
}
