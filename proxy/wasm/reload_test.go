package wasm

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// TestReloadSwap checks that a reload keeps unchanged plugins, lets a
// request in flight finish on the old plugin, and closes the old plugin
// after that request.
func TestReloadSwap(t *testing.T) {
	m := newTestManager(t)
	cfg := func(c string) config.Plugin {
		return testPlugin("features", "features", func(p *config.Plugin) { p.Config = config.RawConfig(c) })
	}
	set1 := prepare(t, m, cfg("one"))
	f1 := factoryOf(t, set1, "features")
	p1 := set1.plugins["features"]

	x := newExchange("http://example.com/")
	s, err := f1.NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	s.OnRequestHeaders(x, true)

	same, err := m.Prepare(t.Context(), []config.Plugin{cfg("one")})
	if err != nil {
		t.Fatal(err)
	}
	if same.plugins["features"] != p1 {
		t.Fatal("an unchanged plugin was not reused")
	}
	same.Close()

	set2 := prepare(t, m, cfg("two"))
	f2 := factoryOf(t, set2, "features")
	if set2.plugins["features"] == p1 {
		t.Fatal("a changed plugin was reused")
	}
	// The request in flight finishes on the old plugin.
	x.Ctx.Response.SetStatusCode(200)
	if st := s.OnResponseHeaders(x, false); st != filter.Continue {
		t.Fatalf("in-flight request on the old plugin: %v", st)
	}
	if p1.refs.Load() != 1 {
		t.Fatalf("old plugin refs = %d, want 1 (the request)", p1.refs.Load())
	}
	s.OnLog(x)
	s.Done(x)
	waitFor(t, func() bool {
		select {
		case <-p1.done:
			return true
		default:
			return false
		}
	})
	// A request that picked the old factory after the swap is served by
	// the new plugin.
	x = newExchange("http://example.com/")
	run(t, f1, x)
	if got := string(x.Ctx.Request.Header.Peek("x-config")); got != "two" {
		t.Fatalf("late request on old factory: x-config %q", got)
	}
	x = newExchange("http://example.com/")
	run(t, f2, x)
	if got := string(x.Ctx.Request.Header.Peek("x-config")); got != "two" {
		t.Fatalf("x-config %q", got)
	}
}

func rssBytes() uint64 {
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

func heapBytes() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestReloadMemory reloads a plugin 100 times with a new configuration
// each time, serving a request on each, and checks that the heap and RSS
// come back to where they were.
func TestReloadMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	m := newTestManager(t)
	reload := func(i int) {
		set := prepare(t, m, testPlugin("addheader", "addheader", func(p *config.Plugin) {
			p.Config = config.RawConfig(strconv.Itoa(i))
			p.PoolSize = 2
		}))
		run(t, factoryOf(t, set, "addheader"), newExchange("http://example.com/"))
	}
	waitClosed := func() {
		waitFor(t, func() bool {
			m.mu.Lock()
			defer m.mu.Unlock()
			return len(m.running) == 1
		})
	}
	// Warm up: the first reloads fill caches and pools.
	for i := 0; i < 10; i++ {
		reload(i)
	}
	waitClosed()
	n := 100
	if v, err := strconv.Atoi(os.Getenv("WASM_RELOADS")); err == nil {
		n = v
	}
	heap0, rss0 := heapBytes(), rssBytes()
	start := time.Now()
	for i := 10; i < 10+n; i++ {
		reload(i)
	}
	took := time.Since(start)
	waitClosed()
	heap1, rss1 := heapBytes(), rssBytes()
	t.Logf("%d reloads in %v (%v each): heap in use %s -> %s MiB, RSS %s -> %s MiB",
		n, took, took/time.Duration(n), mib(heap0), mib(heap1), mib(rss0), mib(rss1))
	if heap1 > heap0+16<<20 {
		t.Errorf("heap grew by %s MiB over 100 reloads", mib(heap1-heap0))
	}
	if rss1 > rss0+64<<20 {
		t.Errorf("RSS grew by %s MiB over 100 reloads", mib(rss1-rss0))
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
