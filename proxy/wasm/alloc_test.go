//go:build !race

package wasm

import (
	"testing"

	"github.com/wasmgate/wasmgate/config"
)

// TestAllocs checks that a request through the minimal plugin allocates
// nothing on the host side once warm. wazero's deadline watch (on with
// WithCloseOnContextDone, as in production) costs about 3 allocations and
// a goroutine per call into the guest; the test measures the host with it
// off, and bounds the total with it on.
func TestAllocs(t *testing.T) {
	const callsPerRequest = 6 // context create, request and response headers, done, log, delete
	for _, watch := range []bool{false, true} {
		m := newTestManager(t)
		m.noCallWatch = !watch
		set := prepare(t, m, testPlugin("addheader", "addheader", func(p *config.Plugin) { p.PoolSize = 1 }))
		f := factoryOf(t, set, "addheader")
		x := newExchange("http://example.com/bench", "user-agent", "bench", "accept", "*/*")
		x.Ctx.Response.SetStatusCode(200)
		for range 100 {
			request(t, f, x)
		}
		allocs := testing.AllocsPerRun(1000, func() { request(t, f, x) })
		t.Logf("deadline watch %v: %.1f allocs per request", watch, allocs)
		want := 0.0
		if watch {
			want = 5 * callsPerRequest
		}
		if allocs > want {
			t.Errorf("deadline watch %v: %.1f allocs per request, want at most %v", watch, allocs, want)
		}
	}
}
