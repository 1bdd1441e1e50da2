package wasm

import (
	"testing"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// TestMetricCalls holds the metric functions to Envoy's answers: a
// counter goes up by at least 1 (an increment of 0 or less is
// BAD_ARGUMENT) and a value recorded on it is added; a gauge is set by a
// record and moved either way by an increment; a histogram takes records
// only, and has no value to get.
func TestMetricCalls(t *testing.T) {
	in := inCallback(t).in

	const nameAt, idAt, valueAt = 2048, 2100, 2104
	define := func(kind abi.MetricType, name string) uint64 {
		t.Helper()
		in.mem.Write(nameAt, []byte(name))
		if st := hostDefineMetric(in, []uint64{uint64(kind), nameAt, uint64(len(name)), idAt}); st != abi.StatusOK {
			t.Fatalf("define %s: %v", name, st)
		}
		id, _ := in.mem.ReadUint32Le(idAt)
		return uint64(id)
	}
	value := func(id uint64) (int64, abi.Status) {
		st := hostGetMetric(in, []uint64{id, valueAt})
		v, _ := in.mem.ReadUint64Le(valueAt)
		return int64(v), st
	}
	counter := define(abi.MetricCounter, "calls.counter")
	gauge := define(abi.MetricGauge, "calls.gauge")
	hist := define(abi.MetricHistogram, "calls.histogram")
	minus := func(n int64) uint64 { return uint64(n) }

	for _, c := range []struct {
		what string
		st   abi.Status
		want abi.Status
	}{
		{"counter +2", hostIncrementMetric(in, []uint64{counter, 2}), abi.StatusOK},
		{"counter +0", hostIncrementMetric(in, []uint64{counter, 0}), abi.StatusBadArgument},
		{"counter -1", hostIncrementMetric(in, []uint64{counter, minus(-1)}), abi.StatusBadArgument},
		{"counter record 5", hostRecordMetric(in, []uint64{counter, 5}), abi.StatusOK},
		{"gauge record 7", hostRecordMetric(in, []uint64{gauge, 7}), abi.StatusOK},
		{"gauge -3", hostIncrementMetric(in, []uint64{gauge, minus(-3)}), abi.StatusOK},
		{"histogram record 12", hostRecordMetric(in, []uint64{hist, 12}), abi.StatusOK},
		{"histogram +1", hostIncrementMetric(in, []uint64{hist, 1}), abi.StatusBadArgument},
	} {
		if c.st != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.st, c.want)
		}
	}
	if v, st := value(counter); st != abi.StatusOK || v != 7 {
		t.Errorf("counter: %d %v, want 7 (2, then 5 recorded and added)", v, st)
	}
	if v, st := value(gauge); st != abi.StatusOK || v != 4 {
		t.Errorf("gauge: %d %v, want 4", v, st)
	}
	if _, st := value(hist); st != abi.StatusBadArgument {
		t.Errorf("histogram value: %v, want BAD_ARGUMENT", st)
	}
}
