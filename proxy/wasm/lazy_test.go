package wasm

import (
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// TestFewerCallsWithWasmgateExports checks the calls into a module built
// with the Go SDK, which exports wasmgate_on_request_headers and
// wasmgate_on_end: a request's context is made with its first callback
// and deleted with its log, and a request that needs no callback costs
// no call. A module without them (the proxy-wasm Go SDK's) is called as
// Envoy calls it.
func TestFewerCallsWithWasmgateExports(t *testing.T) {
	m := newTestManager(t)
	firstparty := func(root, cfg string) func(*config.Plugin) {
		return func(p *config.Plugin) {
			p.File = "../../plugins/firstparty/firstparty.wasm"
			p.VMID, p.RootID, p.Config, p.PoolSize = "firstparty", root, config.RawConfig(cfg), 1
		}
	}
	set := prepare(t, m,
		testPlugin("telemetry", "", firstparty("telemetry", `{"sample_rate": 0}`)),
		testPlugin("authz", "", firstparty("authz", `{"rules": [{"name": "all", "action": "allow", "principals": [""]}], "default": "deny"}`)),
		testPlugin("addheader", "addheader", func(p *config.Plugin) { p.PoolSize = 1 }),
	)
	calls := func(plugin string, req func(s filter.Stream, x *filter.Exchange)) uint64 {
		t.Helper()
		in := set.plugins[plugin].vm.slots[0].cur.Load()
		if plugin != "addheader" && !in.fn.lazy {
			t.Fatalf("%s: the module's wasmgate exports were not found", plugin)
		}
		x := newExchange("http://example.com/")
		before := in.entries.Load()
		s, err := factoryOf(t, set, plugin).NewStream(x)
		if err != nil {
			t.Fatal(err)
		}
		req(s, x)
		s.Done(x)
		return in.entries.Load() - before
	}
	whole := func(s filter.Stream, x *filter.Exchange) {
		if st := s.OnRequestHeaders(x, true); st != filter.Continue {
			t.Fatalf("request headers: %v", st)
		}
		x.Ctx.Response.SetStatusCode(200)
		s.OnResponseHeaders(x, true)
		s.OnLog(x)
	}
	for _, tc := range []struct {
		name, plugin string
		req          func(s filter.Stream, x *filter.Exchange)
		want         uint64
	}{
		// wasmgate_on_request_headers, wasmgate_on_end (log and delete).
		{"telemetry, whole request", "telemetry", whole, 2},
		// An earlier filter answered: the log still runs, in a context
		// made for it.
		{"telemetry, log only", "telemetry", func(s filter.Stream, x *filter.Exchange) { s.OnLog(x) }, 2},
		// wasmgate_on_request_headers, proxy_on_delete.
		{"authz, whole request", "authz", whole, 2},
		// Nothing was asked of the guest, so it has nothing to delete.
		{"authz, no callback", "authz", func(filter.Stream, *filter.Exchange) {}, 0},
		// proxy_on_context_create, the two headers callbacks,
		// proxy_on_done, proxy_on_log, proxy_on_delete.
		{"proxy-wasm Go SDK", "addheader", whole, 6},
	} {
		if got := calls(tc.plugin, tc.req); got != tc.want {
			t.Errorf("%s: %d calls into the guest, want %d", tc.name, got, tc.want)
		}
	}
	// The filters did their work through the shorter calls.
	x := newExchange("http://example.com/")
	run(t, factoryOf(t, set, "telemetry"), x)
	if len(x.Ctx.Request.Header.Peek("traceparent")) == 0 {
		t.Error("telemetry did not set traceparent")
	}
}
