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
	plugins := `
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
`
	for _, set := range []struct {
		name    string
		filters []string
	}{
		{"none", nil},
		{"telemetry", []string{"telemetry"}},
		{"authz", []string{"authz"}},
		{"encryption", []string{"encryption"}},
		{"chain", []string{"telemetry", "authz", "encryption"}},
	} {
		b.Run(set.name, func(b *testing.B) {
			cfg := "admin: {address: \"off\"}\nlisteners:\n  - {name: public, address: 127.0.0.1:0}\n" + plugins +
				"virtual_hosts:\n  - name: default\n    domains: [\"*\"]\n    routes:\n      - name: static\n        match: {prefix: /}\n        direct_response: {status: 200, body: \"static\\n\"}\n"
			if len(set.filters) > 0 {
				cfg += "        filters:\n"
				for _, f := range set.filters {
					cfg += "          - plugin: " + f + "\n"
				}
			}
			host, err := wasm.NewHost(wasm.Options{})
			if err != nil {
				b.Fatal(err)
			}
			hp := newHotPathWith(b, Options{Plugins: host}, cfg, "GET", "/static", "www.example.com")
			hp.tpl.Header.Set("x-secret", "4111-1111-1111-1111")
			for range 1000 {
				if st := hp.do(b); st != 200 {
					b.Fatalf("status %d", st)
				}
			}
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
