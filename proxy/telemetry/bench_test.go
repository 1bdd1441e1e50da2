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
// path does none of this, so cpu-us/op is the cost over no logging;
// user-us/op and sys-us/op are its parts in the process and in the
// kernel (mostly the copy of the bytes into the page cache).
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
	user0, sys0 := cpuTimes()
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
	user1, sys1 := cpuTimes()
	user, sys := user1-user0, sys1-sys0
	if d := p.Dropped(); d != 0 {
		b.Fatalf("%d records dropped: the figure would leave them out", d)
	}
	b.ReportMetric(float64((user+sys).Microseconds())/float64(n), "cpu-us/op")
	b.ReportMetric(float64(user.Microseconds())/float64(n), "user-us/op")
	b.ReportMetric(float64(sys.Microseconds())/float64(n), "sys-us/op")
}

// cpuTimes is the process's user and system CPU time so far.
func cpuTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// BenchmarkEncodeJSON is the sink's share for one access and one
// decision record: encoding them as JSON.
func BenchmarkEncodeJSON(b *testing.B) {
	p := &Pipeline{}
	p.pool.New = func() any { return new(Record) }
	access, decision := fillSample(p, KindAccess), fillSample(p, KindDecision)
	enc := &jsonEncoder{}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = enc.encode(buf[:0], access)
		buf = enc.encode(buf[:0], decision)
	}
	b.SetBytes(int64(len(enc.encode(enc.encode(nil, access), decision))))
}
