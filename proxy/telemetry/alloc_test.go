//go:build !race

package telemetry

import "testing"

// TestEmitAllocates nothing: taking a record, filling it, queueing it and
// the sink's release of it, and the drop path of a full queue.
func TestEmitAllocates(t *testing.T) {
	p := &Pipeline{}
	p.pool.New = func() any { return new(Record) }
	s := &sink{name: "s", queue: make(chan *Record, 1), p: p}
	tab := &table{sinks: []*sink{s}}
	tab.routes[KindAccess] = []*sink{s}
	tab.routes[KindDecision] = []*sink{s}
	p.tab.Store(tab)
	// Warm the pool and the records' buffers.
	for range 10 {
		p.Emit(fillSample(p, KindAccess))
		p.unref(<-s.queue)
	}
	queued := testing.AllocsPerRun(1000, func() {
		p.Emit(fillSample(p, KindAccess))
		p.unref(<-s.queue)
	})
	s.queue <- p.Acquire(KindEvent)
	dropped := testing.AllocsPerRun(1000, func() {
		p.Emit(fillSample(p, KindDecision))
	})
	if queued != 0 || dropped != 0 {
		t.Errorf("allocations per record: %v queued, %v dropped; want 0", queued, dropped)
	}
}

// TestEncodeAllocates nothing once the buffer has grown.
func TestEncodeAllocates(t *testing.T) {
	p := &Pipeline{}
	p.pool.New = func() any { return new(Record) }
	buf := make([]byte, 0, 4096)
	enc := &jsonEncoder{}
	for k := range numKinds {
		r := fillSample(p, k)
		if n := testing.AllocsPerRun(100, func() { buf = enc.encode(buf[:0], r) }); n != 0 {
			t.Errorf("JSON of %s: %v allocations", k, n)
		}
	}
}

// TestREDAllocates nothing for a known label set.
func TestREDAllocates(t *testing.T) {
	red := NewRED(10)
	id := "spiffe://mesh/ns/a/sa/web"
	red.Stats("cart", "payments", id).Observe(200, 0)
	if n := testing.AllocsPerRun(1000, func() { red.Stats("cart", "payments", id).Observe(503, 0) }); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}
