//go:build !race

package wasm

import (
	"runtime"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// TestAllocs checks that a request through the minimal plugin, with the
// call deadline on as in production, allocates nothing beyond the cost
// wazero charges per call into a guest for it (the goroutine that watches
// the call; see RATIONALE). That cost is measured on the same instance by
// calling the module's ABI marker, an export that does nothing.
func TestAllocs(t *testing.T) {
	const callsPerRequest = 6 // context create, request and response headers, done, log, delete
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("addheader", "addheader", func(p *config.Plugin) {
		p.PoolSize = 1
		p.CallTimeout = config.Duration(time.Minute) // on, but never cut short on a starved machine
	}))
	f := factoryOf(t, set, "addheader")
	x := newExchange("http://example.com/bench", "user-agent", "bench", "accept", "*/*")
	x.Ctx.Response.SetStatusCode(200)
	for range 100 {
		request(t, f, x)
	}

	in := set.plugins["addheader"].slots[0].cur.Load()
	marker := in.mod.ExportedFunction(abi.MarkerV020)
	if marker == nil {
		t.Fatalf("addheader does not export %s", abi.MarkerV020)
	}
	// AllocsPerRun runs on one P, where wazero's watch goroutines wait
	// until the test yields; yielding after each run lets them exit, so
	// that their goroutine structures are reused rather than allocated.
	calls := testing.AllocsPerRun(1000, func() {
		in.mu.Lock()
		for range callsPerRequest {
			if _, err := in.invoke(marker); err != nil {
				t.Fatal(err)
			}
		}
		in.mu.Unlock()
		runtime.Gosched()
	})
	perRequest := testing.AllocsPerRun(1000, func() {
		request(t, f, x)
		runtime.Gosched()
	})
	host := perRequest - calls
	t.Logf("%.1f allocs per request: %.1f for %d empty calls (wazero's per-call watch), %.1f by the host",
		perRequest, calls, callsPerRequest, host)
	if host > 0 {
		t.Errorf("host allocates %.1f times per request, want 0", host)
	}
}
