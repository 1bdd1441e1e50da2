package loadgen

import (
	"io"
	"testing"
)

// FuzzDecodeReport feeds arbitrary bytes to the report decoder and every
// presentation of what it accepts: none may panic.
func FuzzDecodeReport(f *testing.F) {
	f.Add([]byte(`{"protocol":"h1","responses":3,"latency":{"p50_ns":1000},"status":{"200":3},"timeline":[{"second":0,"responses":3}],"percentiles":[{"percentile":50,"latency_ns":1000}]}`))
	f.Add([]byte(`{"timeline":[{"second":-5,"responses":-1}],"percentiles":[{"percentile":120,"latency_ns":-1}],"elapsed_ns":-1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := DecodeReport(b)
		if err != nil {
			return
		}
		_ = rep.WriteText(io.Discard)
		_ = rep.WriteHTML(io.Discard)
		_ = WriteComparison(io.Discard, "a", rep, "b", rep)
	})
}
