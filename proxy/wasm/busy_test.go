package wasm

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// burnEnv makes the test binary a CPU burner (see TestCPUBurner).
const burnEnv = "WASMGATE_TEST_BURN"

// TestCPUBurner is not a test: started by startBurners with burnEnv set,
// it spins until killed.
func TestCPUBurner(t *testing.T) {
	if os.Getenv(burnEnv) == "" {
		t.Skip("a helper process for TestBusyMachine, run only by it")
	}
	runtime.GOMAXPROCS(1)
	x := uint64(1)
	for {
		x = x*6364136223846793005 + 1
	}
}

// startBurners starts n processes that spin on the CPU until the test ends.
func startBurners(t *testing.T, n int) {
	t.Helper()
	for range n {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCPUBurner$")
		cmd.Env = append(os.Environ(), burnEnv+"=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
}

// TestBusyMachine checks that a call's deadline counts the guest's own
// work, not the time its thread waits: a guest blocked in a host call
// (a 20 ms sleep against a 5 ms deadline), and a guest computing for a
// third of its deadline while other processes keep every core busy, are
// not failed, whichever way calls are stopped.
func TestBusyMachine(t *testing.T) {
	for _, stop := range []stopMode{stopInterrupt, stopWatch} {
		t.Run(stop.String()+"/blocked", func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := newStopManager(t, stop)
			m.metrics.unregister()
			hm, err := newHostMetrics(reg, m.guest)
			if err != nil {
				t.Fatal(err)
			}
			m.metrics = hm
			set := prepare(t, m, testPlugin("faulty", "faulty", func(p *config.Plugin) {
				p.CallTimeout = config.Duration(5 * time.Millisecond)
				p.PoolSize = 1
			}))
			f := factoryOf(t, set, "faulty")
			for range 3 {
				x := newExchange("http://example.com/", "x-fault", "slow")
				start := time.Now()
				if st, _ := run(t, f, x); st != filter.Continue || x.Local() {
					t.Fatalf("a blocked guest failed: status %v, code %d", st, x.Ctx.Response.StatusCode())
				}
				if took := time.Since(start); took < 20*time.Millisecond {
					t.Fatalf("the call took %v, less than its 20 ms sleep", took)
				}
			}
			if c := gather(t, reg, "wasmgate_wasm_instance_failures_total", "faulty"); c != nil {
				t.Fatalf("failures counted: %v", c)
			}
		})
		t.Run(stop.String()+"/starved", func(t *testing.T) {
			const timeout = 150 * time.Millisecond
			m := newStopManager(t, stop)
			set := prepare(t, m, testPlugin("faulty", "faulty", func(p *config.Plugin) {
				p.CallTimeout = config.Duration(timeout)
				p.PoolSize = 1
			}))
			f := factoryOf(t, set, "faulty")
			in := set.plugins["faulty"].vm.slots[0].cur.Load()
			// spin runs the request headers callback with n spins and
			// returns its status, wall time and CPU time.
			spin := func(n int) (filter.Status, time.Duration, time.Duration) {
				x := newExchange("http://example.com/", "x-fault", "spin", "x-spins", strconv.Itoa(n))
				s, err := f.NewStream(x)
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				st := s.OnRequestHeaders(x, true)
				wall := time.Since(start)
				in.mu.Lock()
				cpu := time.Duration(in.cc.lastCPU)
				in.mu.Unlock()
				s.OnLog(x)
				s.Done(x)
				return st, wall, cpu
			}
			// Find a spin count that takes an eighth to a quarter of the
			// budget on an idle thread, by the wall clock: a call counts
			// its CPU time only once half its budget of wall time has
			// passed, so lastCPU says nothing of a shorter call, and its
			// wall time bounds its CPU time.
			spins := 1 << 16
			for {
				st, wall, _ := spin(spins)
				if st != filter.Continue {
					t.Fatalf("calibrating with %d spins: %v", spins, st)
				}
				if wall >= timeout/8 {
					t.Logf("%d spins take %v of wall time on an idle thread", spins, wall)
					break
				}
				spins *= 2
			}

			startBurners(t, 4*runtime.NumCPU())
			time.Sleep(200 * time.Millisecond) // let them take the cores
			var overran int
			for range 5 {
				st, wall, cpu := spin(spins)
				t.Logf("under load: %v of wall time, %v of CPU counted", wall, cpu)
				if st != filter.Continue {
					t.Fatalf("a starved guest failed after %v (CPU %v): status %v", wall, cpu, st)
				}
				if wall > timeout {
					overran++
				}
			}
			t.Logf("%d of 5 calls took longer than the %v deadline by the wall clock", overran, timeout)
		})
	}
}

// livePool counts the plugin's live instances.
func livePool(p *plugin) int {
	v := p.vm
	n := 0
	for i := range v.slots {
		if in := v.slots[i].cur.Load(); in != nil && !in.dead.Load() {
			n++
		}
	}
	return n
}

// TestPoolGrowsAndShrinks checks that a pool starts with one instance,
// grows while concurrent requests find every instance busy, and shrinks
// back to one once they stay idle.
func TestPoolGrowsAndShrinks(t *testing.T) {
	m := newTestManager(t)
	m.idleAfter = 300 * time.Millisecond
	set := prepare(t, m, testPlugin("faulty", "faulty", func(p *config.Plugin) {
		p.PoolSize = 4
	}))
	p := set.plugins["faulty"]
	if n := livePool(p); n != 1 {
		t.Fatalf("pool starts with %d instances, want 1", n)
	}
	f := factoryOf(t, set, "faulty")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				x := newExchange("http://example.com/", "x-fault", "slow")
				if st, _ := run(t, f, x); st != filter.Continue {
					t.Errorf("request failed: %v", st)
					return
				}
			}
		}()
	}
	waitFor(t, func() bool { return livePool(p) == 4 })
	close(stop)
	wg.Wait()
	waitFor(t, func() bool { return livePool(p) == 1 })
	x := newExchange("http://example.com/")
	if st, _ := run(t, f, x); st != filter.Continue || string(x.Ctx.Request.Header.Peek("x-faulty")) != "ok" {
		t.Fatalf("after shrinking: %v", st)
	}
}

// TestSlowStartReloadUnderLoad reloads a plugin into a version that takes
// 5 s to start while requests stream through it: Prepare returns at once
// with the running version in the set, every request is served (none
// fails or waits for the start), and requests move to the new version by
// themselves once it is ready.
func TestSlowStartReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a 5 s start")
	}
	m := newTestManager(t, func(o *Options) { o.StartWait = 200 * time.Millisecond })
	v1 := testPlugin("slow", "slowstart", func(p *config.Plugin) { p.Config = []byte("v1"); p.PoolSize = 4 })
	other := testPlugin("other", "addheader")
	set := prepare(t, m, v1, other)
	f := factoryOf(t, set, "slow")

	var served, failed, onV2 atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				x := newExchange("http://example.com/")
				s, err := f.NewStream(x)
				if err != nil {
					failed.Add(1)
					continue
				}
				st := s.OnRequestHeaders(x, true)
				s.OnLog(x)
				s.Done(x)
				switch v := string(x.Ctx.Request.Header.Peek("x-version")); {
				case st != filter.Continue || x.Local() || (v != "v1" && v != "v2"):
					failed.Add(1)
				case v == "v2":
					onV2.Add(1)
					served.Add(1)
				default:
					served.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	waitFor(t, func() bool { return served.Load() > 50 })

	v2 := testPlugin("slow", "slowstart", func(p *config.Plugin) {
		p.Config = []byte("v2")
		p.VMConfig = []byte("5s")
		p.PoolSize = 4
	})
	start := time.Now()
	set2, err := m.Prepare(context.Background(), []config.Plugin{v2, other})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Prepare waited %v for a slow start", took)
	}
	m.Activate(set2)
	// A reload meanwhile (here: the same plugins again, as when another
	// part of the configuration changed) is not held up either.
	start = time.Now()
	set3, err := m.Prepare(context.Background(), []config.Plugin{v2, other})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("an unrelated reload waited %v", took)
	}
	m.Activate(set3)

	deadline := time.Now().Add(30 * time.Second)
	for onV2.Load() < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("requests never moved to the new version (served %d, failed %d)", served.Load(), failed.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("served %d (%d on the new version), failed %d", served.Load(), onV2.Load(), failed.Load())
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d requests failed during the reload", n)
	}
}
