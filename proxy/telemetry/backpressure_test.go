package telemetry

import (
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
)

// TestBackPressure points a TCP syslog sink at a listener that accepts
// connections and never reads, and emits records from several goroutines
// for a bounded time. Emit must never wait on the sink: the emitters run
// far past what the queue and the socket buffers could hold, every record
// is accounted for as delivered or dropped, the drops are counted, and
// the heap stays bounded.
func TestBackPressure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})

	const queue = 1024
	p, err := New(&config.Telemetry{
		Sinks: []config.TelemetrySink{{Name: "stuck", Type: "syslog", QueueRecords: queue,
			Syslog: &config.SyslogSink{Network: "tcp", Address: l.Addr().String()}}},
		Access: []string{"stuck"}, Decision: []string{"stuck"},
	}, WithWriteTimeout(100*time.Millisecond), WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	const emitters, runFor = 4, 2 * time.Second
	var emitted atomic.Uint64
	stop := time.Now().Add(runFor)
	var wg sync.WaitGroup
	for range emitters {
		wg.Go(func() {
			for n := 0; time.Now().Before(stop); n++ {
				k := KindAccess
				if n%2 == 1 {
					k = KindDecision
				}
				p.Emit(fillSample(p, k))
				emitted.Add(1)
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(runFor + 30*time.Second):
		t.Fatal("emitters were held up by the sink")
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_ = p.Shutdown(ctx)
	s := p.tab.Load().sinks[0]
	var sent, dropped, queueFull uint64
	for k := range numKinds {
		sent += s.sent[k].Load()
		queueFull += s.dropped[k][dropQueueFull].Load()
		for r := range numReasons {
			dropped += s.dropped[k][r].Load()
		}
	}
	n := emitted.Load()
	t.Logf("emitted %d in %v: sent %d, dropped %d (queue full %d), heap %d -> %d KiB",
		n, runFor, sent, dropped, queueFull, before.HeapInuse>>10, after.HeapInuse>>10)
	// The queue plus a socket's buffers hold at most a few tens of
	// thousands of records; the emitters went well past that.
	if n < 50*queue {
		t.Errorf("only %d records were emitted in %v: Emit waited on the sink", n, runFor)
	}
	if sent+dropped != n {
		t.Errorf("sent %d + dropped %d != emitted %d", sent, dropped, n)
	}
	if queueFull == 0 {
		t.Error("no queue_full drops counted")
	}
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 32<<20 {
		t.Errorf("heap grew by %d MiB under back-pressure", grew>>20)
	}
	if p.Dropped() != dropped {
		t.Errorf("Dropped() = %d, want %d", p.Dropped(), dropped)
	}
}
