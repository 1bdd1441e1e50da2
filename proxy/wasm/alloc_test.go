//go:build !race

package wasm

import (
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// TestAllocs checks that a request through a minimal plugin, with the call
// deadline on as in production, allocates nothing, in the host or in
// wazero. It runs the public Go SDK's addheader and this SDK's hello,
// whose read of :path calls back into the guest's allocator.
func TestAllocs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		plugin  func(t *testing.T) config.Plugin
		request func(testing.TB, filter.Factory, *filter.Exchange)
	}{
		{"addheader", func(*testing.T) config.Plugin { return testPlugin("p", "addheader") }, request},
		{"hello", func(t *testing.T) config.Plugin {
			return config.Plugin{Name: "p", File: sdkModule(t, "examples/hello"), FailurePolicy: config.FailClosed}
		}, helloRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestManager(t)
			pc := tc.plugin(t)
			pc.PoolSize = 1
			pc.CallTimeout = config.Duration(time.Minute) // on, but never cut short on a starved machine
			set := prepare(t, m, pc)
			f := factoryOf(t, set, "p")
			x := newExchange("http://example.com/bench", "user-agent", "bench", "accept", "*/*")
			x.Ctx.Response.SetStatusCode(200)
			for range 100 {
				tc.request(t, f, x)
			}

			perRequest := testing.AllocsPerRun(1000, func() { tc.request(t, f, x) })
			if perRequest > 0 {
				t.Errorf("a request through %s allocates %.1f times, want 0", tc.name, perRequest)
			}

		})
	}
}
