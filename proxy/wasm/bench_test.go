package wasm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// request is one request's whole life through the filter, with the
// exchange reused as the proxy reuses it.
func request(tb testing.TB, f filter.Factory, x *filter.Exchange) {
	filterRequest(tb, f, x, "x-wasm")
}

// filterRequest is request for a filter that adds the header added.
func filterRequest(tb testing.TB, f filter.Factory, x *filter.Exchange, added string) {
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
	x.Ctx.Request.Header.Del(added)
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
	benchRequests(b, f, x, request)
}

// benchRequests warms the filter up, then measures do per request, with
// the process's CPU time per request beside the wall time.
func benchRequests(b *testing.B, f filter.Factory, x *filter.Exchange, do func(testing.TB, filter.Factory, *filter.Exchange)) {
	for range 100 {
		do(b, f, x)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for b.Loop() {
		do(b, f, x)
	}
	reportCPU(b, cpu)
}

// BenchmarkGuestCall measures one call into a guest export that does
// nothing (the ABI marker) under the call deadline: what every call of a
// request pays before the guest runs. The deadline is long so that a
// starved machine does not cut a call off; its length costs nothing.
// For each stopMode: the guest checking its deadline (the default),
// wazero's per-call watch, and no deadline at all.
func BenchmarkGuestCall(b *testing.B) {
	for _, stop := range []stopMode{stopInterrupt, stopWatch, stopNone} {
		b.Run("stop="+stop.String(), func(b *testing.B) {
			m := newStopManager(b, stop)
			set := prepare(b, m, testPlugin("addheader", "addheader", func(p *config.Plugin) {
				p.PoolSize = 1
				p.CallTimeout = config.Duration(time.Minute)
			}))
			in := set.plugins["addheader"].vm.slots[0].cur.Load()
			marker := in.mod.ExportedFunction(abi.MarkerV020)
			b.ReportAllocs()
			cpu := processCPU()
			for b.Loop() {
				in.mu.Lock()
				_, err := in.invoke(marker)
				in.mu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
	}
}

// reportCPU reports the CPU time the whole process spent per op since
// start, on every thread: unlike ns/op it counts work done beside the
// benchmark's goroutine (wazero's watch goroutines, the GC).
func reportCPU(b *testing.B, start time.Duration) {
	if used := processCPU() - start; used > 0 {
		b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// processCPU returns the user and system time of the process, from
// /proc/self/stat in clock ticks of 10ms; 0 where there is no /proc.
func processCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
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

// BenchmarkCompile compiles the features module (2.7 MB) with an empty
// cache each time: the cost of a plugin the proxy has never seen.
func BenchmarkCompile(b *testing.B) {
	for b.Loop() {
		m := newTestManager(b, func(o *Options) { o.CacheDir = b.TempDir() })
		set, err := m.Prepare(b.Context(), []config.Plugin{testPlugin("features", "features", func(p *config.Plugin) { p.PoolSize = 1 })})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(set.plugins["features"].vm.compileTime.Seconds()*1000, "compile-ms")
		set.Close()
		m.Close()
	}
}

// BenchmarkInstance measures one more instance of the features module:
// the time to instantiate and start it, its linear memory, and the
// process's RSS growth per instance.
func BenchmarkInstance(b *testing.B) {
	m := newTestManager(b)
	set := prepare(b, m, testPlugin("features", "features", func(p *config.Plugin) { p.PoolSize = 1 }))
	p := set.plugins["features"].vm
	rss0 := rssBytes()
	var keep []*instance
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p.mu.Lock()
		in, err := p.newInstance(0)
		p.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		keep = append(keep, in)
	}
	b.StopTimer()
	rss1 := rssBytes()
	b.ReportMetric(float64(keep[0].mem.Size())/(1<<20), "guest-MiB/instance")
	b.ReportMetric(float64(rss1-rss0)/float64(len(keep))/(1<<20), "RSS-MiB/instance")
	for _, in := range keep {
		in.mu.Lock()
		in.discard(errPluginClosed)
		in.mu.Unlock()
	}
}

// sdkModule builds a plugin of the SDK (a directory under sdk/, e.g.
// "examples/hello") as `wasmgate plugin build` does, once per test
// binary, and returns the module's path.
func sdkModule(tb testing.TB, dir string) string {
	tb.Helper()
	sdkBuilds.Lock()
	defer sdkBuilds.Unlock()
	if p, ok := sdkBuilds.m[dir]; ok {
		return p
	}
	gotool, err := exec.LookPath("go")
	if err != nil {
		tb.Skip("no go toolchain")
	}
	out := filepath.Join(os.TempDir(), "wasmgate-sdk-"+strings.ReplaceAll(dir, "/", "-")+"-"+strconv.Itoa(os.Getpid())+".wasm")
	cmd := exec.Command(gotool, "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false", "-o", out, ".")
	cmd.Dir = filepath.Join("..", "..", "sdk", dir)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building sdk/%s: %v\n%s", dir, err, b)
	}
	if sdkBuilds.m == nil {
		sdkBuilds.m = map[string]string{}
	}
	sdkBuilds.m[dir] = out
	return out
}

var sdkBuilds struct {
	sync.Mutex
	m map[string]string
}

// BenchmarkRequestHello is BenchmarkRequest through the SDK's minimal
// example (sdk/examples/hello: reads :path, sets one header), the module
// of the whole-proxy filter benchmark, for each stopMode.
func BenchmarkRequestHello(b *testing.B) {
	path := sdkModule(b, "examples/hello")
	for _, stop := range []stopMode{stopInterrupt, stopWatch, stopNone} {
		b.Run("stop="+stop.String(), func(b *testing.B) {
			m := newStopManager(b, stop)
			pc := config.Plugin{Name: "hello", File: path, PoolSize: 1, FailurePolicy: config.FailClosed}
			set := prepare(b, m, pc)
			f := factoryOf(b, set, "hello")
			x := newExchange("http://example.com/bench", "user-agent", "bench", "accept", "*/*")
			x.Ctx.Response.SetStatusCode(200)
			benchRequests(b, f, x, helloRequest)
		})
	}
}

func helloRequest(tb testing.TB, f filter.Factory, x *filter.Exchange) {
	filterRequest(tb, f, x, "x-hello")
}

// BenchmarkThreadCPU is the cost of one reading of the thread's CPU clock,
// which a call pays once it reaches its first deadline check.
func BenchmarkThreadCPU(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		threadCPU()
	}
}
