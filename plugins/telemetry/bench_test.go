package telemetry

import (
	"testing"

	"github.com/wasmgate/wasmgate/proxy/wasm/wasmtest"
)

// BenchmarkRequest is one request through the plugin in the harness: the
// whole callback sequence, with a traceparent continued, metrics counted
// and the span batched (exported on a tick every second).
func BenchmarkRequest(b *testing.B) {
	h := plugin(b, `{"sample_rate":1,"metric_prefix":"bench","collector":{"cluster":"otel","flush_interval":"1s"}}`)
	req := &wasmtest.Request{Path: "/orders/7", Route: "api", Cluster: "backend",
		Header: [][2]string{{"traceparent", incoming}, {"user-agent", "bench"}}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.Do(req); err != nil {
			b.Fatal(err)
		}
	}
}
