//go:build !race

package wasm

import (
	"runtime"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// TestAllocs checks that a request through a minimal plugin, with the call
// deadline on as in production, allocates nothing beyond the cost wazero
// charges per call into a guest for it (the goroutine that watches the
// call; see RATIONALE). That cost is measured on the same instance by
// calling the module's ABI marker, an export that does nothing. It runs
// the public Go SDK's addheader and this SDK's hello, whose read of :path
// calls back into the guest's allocator.
func TestAllocs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		plugin func(t *testing.T) config.Plugin
		marker string
		// context create, request and response headers, done (addheader)
		// or the allocator (hello), log, delete
		callsPerRequest int
		request         func(testing.TB, filter.Factory, *filter.Exchange)
	}{
		{"addheader", func(*testing.T) config.Plugin { return testPlugin("p", "addheader") }, abi.MarkerV020, 6, request},
		{"hello", func(t *testing.T) config.Plugin {
			return config.Plugin{Name: "p", File: sdkModule(t, "examples/hello"), FailurePolicy: config.FailClosed}
		}, abi.MarkerV021, 6, helloRequest},
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

			in := set.plugins["p"].slots[0].cur.Load()
			marker := in.mod.ExportedFunction(tc.marker)
			if marker == nil {
				t.Fatalf("the module does not export %s", tc.marker)
			}
			// AllocsPerRun runs on one P, where wazero's watch goroutines
			// wait until the test yields; yielding after each run lets them
			// exit, so that their goroutine structures are reused rather
			// than allocated.
			calls := testing.AllocsPerRun(1000, func() {
				in.mu.Lock()
				for range tc.callsPerRequest {
					if _, err := in.invoke(marker); err != nil {
						t.Fatal(err)
					}
				}
				in.mu.Unlock()
				runtime.Gosched()
			})
			perRequest := testing.AllocsPerRun(1000, func() {
				tc.request(t, f, x)
				runtime.Gosched()
			})
			host := perRequest - calls
			t.Logf("%.1f allocs per request: %.1f for %d empty calls (wazero's per-call watch), %.1f by the host",
				perRequest, calls, tc.callsPerRequest, host)
			if host > 0 {
				t.Errorf("host allocates %.1f times per request, want 0", host)
			}
		})
	}
}
