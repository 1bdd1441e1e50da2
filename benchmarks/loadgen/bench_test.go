package loadgen

import (
	"context"
	"testing"
	"time"
)

// newTestWorker returns a closed-loop HTTP/1.1 worker, connected to a
// local fasthttp server and ready to step, outside of Run.
func newTestWorker(tb testing.TB) *worker {
	tb.Helper()
	u, _ := startFastHTTP(tb, okHandler)
	cfg := &Config{Targets: []Target{{URL: u + "/"}}, Requests: 1 << 62}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	r, err := newRunner(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	tb.Cleanup(r.cancel)
	r.start = time.Now()
	r.measureStart = r.start
	st := newStats(600, false)
	w := &worker{r: r, st: st, req: newH1Client(r, st), quota: -1, timeout: cfg.timeout(), wrr: make([]int, 1)}
	tb.Cleanup(w.req.close)
	if err := w.req.connect(r.ctx); err != nil {
		tb.Fatal(err)
	}
	return w
}

// BenchmarkH1ClosedLoop measures one request of the HTTP/1.1 closed loop
// against a local fasthttp server: send, read, record.
func BenchmarkH1ClosedLoop(b *testing.B) {
	w := newTestWorker(b)
	b.ReportAllocs()
	for b.Loop() {
		if !w.step() {
			b.Fatal("worker stopped")
		}
	}
	if e := w.st.errors.Load(); e != 0 {
		b.Fatalf("%d errors", e)
	}
}
