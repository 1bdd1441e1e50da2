package wasm

import (
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// request is one request's whole life through the filter, with the
// exchange reused as the proxy reuses it.
func request(tb testing.TB, f filter.Factory, x *filter.Exchange) {
	s, err := f.NewStream(x)
	if err != nil {
		tb.Fatal(err)
	}
	if st := s.OnRequestHeaders(x, true); st != filter.Continue {
		tb.Fatalf("request headers: %v", st)
	}
	if st := s.OnResponseHeaders(x, true); st != filter.Continue {
		tb.Fatalf("response headers: %v", st)
	}
	s.OnLog(x)
	s.Done(x)
	x.Ctx.Request.Header.Del("x-wasm")
}

func benchSetup(tb testing.TB) (filter.Factory, *filter.Exchange) {
	m := newTestManager(tb)
	set := prepare(tb, m, testPlugin("addheader", "addheader", func(p *config.Plugin) { p.PoolSize = 1 }))
	f := factoryOf(tb, set, "addheader")
	x := newExchange("http://example.com/bench", "user-agent", "bench", "accept", "*/*")
	x.Ctx.Response.SetStatusCode(200)
	return f, x
}

// BenchmarkRequest measures the ABI boundary: a request through the
// minimal header-adding plugin (context create, request headers with one
// header added, response headers, done, log, delete).
func BenchmarkRequest(b *testing.B) {
	f, x := benchSetup(b)
	for range 100 {
		request(b, f, x)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		request(b, f, x)
	}
}

// BenchmarkRequestParallel runs requests from every P on a pool of
// instances.
func BenchmarkRequestParallel(b *testing.B) {
	m := newTestManager(b)
	set := prepare(b, m, testPlugin("addheader", "addheader", func(p *config.Plugin) { p.PoolSize = 0 }))
	f := factoryOf(b, set, "addheader")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		x := newExchange("http://example.com/bench", "user-agent", "bench")
		x.Ctx.Response.SetStatusCode(200)
		for pb.Next() {
			request(b, f, x)
		}
	})
}
