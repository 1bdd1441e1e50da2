package telemetry

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
)

// BenchmarkEmit is the request path's share: take a record, fill it and
// queue it for a file sink that writes it off the request path.
func BenchmarkEmit(b *testing.B) {
	p, err := New(&config.Telemetry{
		Sinks:  []config.TelemetrySink{{Name: "file", Type: "file", File: &config.FileSink{Path: filepath.Join(b.TempDir(), "a.jsonl")}}},
		Access: []string{"file"},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Emit(fillSample(p, KindAccess))
		}
	})
}

// BenchmarkAccessDecisionFile measures the whole cost of logging one
// request's access and decision records as JSON to a file: the request
// path's Emit and the sink's encoding and writing, as process CPU time
// (user plus system, from getrusage) per request. The sink keeps up: every
// 128 requests the benchmark sleeps while the queue is more than a
// quarter full, as a proxy's requests would pause for I/O, so no record is
// dropped and none is left out of the figure. With no logging the request
// path does none of this, so cpu-us/op is the cost over no logging.
func BenchmarkAccessDecisionFile(b *testing.B) {
	p, err := New(&config.Telemetry{
		Sinks: []config.TelemetrySink{{Name: "file", Type: "file", QueueRecords: 16384,
			File: &config.FileSink{Path: filepath.Join(b.TempDir(), "a.jsonl"), MaxSizeMB: 64}}},
		Access: []string{"file"}, Decision: []string{"file"},
	})
	if err != nil {
		b.Fatal(err)
	}
	s := p.tab.Load().sinks[0]
	// idle waits, asleep so as not to add to the figure, while the queue
	// is more than a quarter full.
	idle := func() {
		for len(s.queue) > cap(s.queue)/4 {
			time.Sleep(time.Millisecond)
		}
	}
	b.ReportAllocs()
	start := cpuTime()
	n := 0
	for b.Loop() {
		p.Emit(fillSample(p, KindAccess))
		p.Emit(fillSample(p, KindDecision))
		if n++; n%128 == 0 {
			idle()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
	used := cpuTime() - start
	if d := p.Dropped(); d != 0 {
		b.Fatalf("%d records dropped: the figure would leave them out", d)
	}
	b.ReportMetric(float64(used.Microseconds())/float64(n), "cpu-us/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
