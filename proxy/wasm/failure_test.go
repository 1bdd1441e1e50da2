package wasm

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// TestFailures breaks a plugin in every way a guest can and checks that
// the request fails as the policy says, the broken instance is replaced,
// and other requests are served meanwhile.
func TestFailures(t *testing.T) {
	tests := []struct {
		fault, kind string
	}{
		{"panic", "abort"},
		{"trap", "abort"},
		{"loop", "timeout"},
		{"oom", "abort"},
	}
	for _, policy := range []string{config.FailClosed, config.FailOpen, config.FailReload} {
		for _, tt := range tests {
			t.Run(policy+"/"+tt.fault, func(t *testing.T) {
				t.Parallel()
				reg := prometheus.NewRegistry()
				m := newTestManager(t, withRegistry(reg))
				set := prepare(t, m, testPlugin("faulty", "faulty", func(p *config.Plugin) {
					p.FailurePolicy = policy
					p.CallTimeout = config.Duration(200 * time.Millisecond)
					p.MemoryLimitMB = 48
					p.PoolSize = 2
				}))
				f := factoryOf(t, set, "faulty")

				// A healthy request runs beside the failing one.
				var healthy atomic.Int32
				stop := make(chan struct{})
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						x := newExchange("http://example.com/ok")
						s, err := f.NewStream(x)
						if err != nil {
							continue
						}
						if s.OnRequestHeaders(x, true) == filter.Continue && string(x.Ctx.Request.Header.Peek("x-faulty")) == "ok" {
							healthy.Add(1)
						}
						s.OnLog(x)
						s.Done(x)
						time.Sleep(time.Millisecond)
					}
				}()

				x := newExchange("http://example.com/", "x-fault", tt.fault)
				s, err := f.NewStream(x)
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				st := s.OnRequestHeaders(x, true)
				took := time.Since(start)
				resp := s.OnResponseHeaders(x, false)
				s.OnLog(x)
				s.Done(x)
				// The deadline counts the guest's CPU time: on a starved
				// machine a loop's 200ms of CPU can take many seconds of
				// wall time, but it must end.
				if took > time.Minute {
					t.Errorf("failing callback took %v", took)
				}
				switch policy {
				case config.FailOpen:
					if st != filter.Continue || resp != filter.Continue || x.Local() {
						t.Errorf("fail_open: %v/%v local=%v", st, resp, x.Local())
					}
				default:
					if st != filter.Stop || x.Ctx.Response.StatusCode() != 503 || x.Flags&filter.FlagFilterFailed == 0 {
						t.Errorf("%s: status %v code %d flags %v", policy, st, x.Ctx.Response.StatusCode(), x.Flags)
					}
				}
				if c := gather(t, reg, "wasmgate_wasm_instance_failures_total", "faulty"); c == nil || c.GetCounter().GetValue() != 1 {
					t.Errorf("failures counter = %v", c)
				}
				waitFor(t, func() bool {
					c := gather(t, reg, "wasmgate_wasm_instance_replacements_total", "faulty")
					return c != nil && c.GetCounter().GetValue() == 1
				})
				before := healthy.Load()
				waitFor(t, func() bool { return healthy.Load() > before+5 })
				close(stop)
				wg.Wait()
			})
		}
	}
}

// TestPausedRequestOnBrokenInstance checks that a request paused on an
// instance that breaks meanwhile is answered rather than left waiting.
func TestPausedRequestOnBrokenInstance(t *testing.T) {
	// The call's answer is held until the instance is broken, so that it
	// cannot arrive first however the goroutines are scheduled.
	gated := &gatedUpstreams{open: make(chan struct{}), next: testUpstreams(t)}
	m := newTestManager(t, func(o *Options) { o.Upstreams = gated })
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(gated.open) }) })
	set := prepare(t, m, testPlugin("auth", "httpcall", func(p *config.Plugin) {
		p.Config = config.RawConfig("auth")
		p.AllowedClusters = []string{"auth"}
		p.PoolSize = 1
	}))
	f := factoryOf(t, set, "auth")
	x := newExchange("http://example.com/", "x-user", "alice")
	s, err := f.NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	in := s.(*stream).in
	if st := s.OnRequestHeaders(x, true); st != filter.Pause {
		t.Fatalf("status %v", st)
	}
	// Break the instance, then let the answer arrive.
	in.mu.Lock()
	in.vm.failed(in, errBroken)
	in.mu.Unlock()
	release.Do(func() { close(gated.open) })
	if !x.Wait(5 * time.Second) {
		t.Fatal("request left paused")
	}
	if x.Ctx.Response.StatusCode() != 503 || x.Flags&filter.FlagFilterFailed == 0 {
		t.Fatalf("code %d flags %v", x.Ctx.Response.StatusCode(), x.Flags)
	}
	s.OnLog(x)
	s.Done(x)
}

// gatedUpstreams holds every call until open is closed, then passes it
// to next.
type gatedUpstreams struct {
	open chan struct{}
	next filter.Upstreams
}

func (g *gatedUpstreams) Call(cluster string, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	<-g.open
	return g.next.Call(cluster, req, resp, timeout)
}

// TestStopRunningCall checks the fact the call deadline rests on, in both
// ways a plugin's calls can be stopped: a guest in a loop that never ends
// stops as soon as its deadline is found passed, here long before the
// deadline it began with. With the interrupt the guest finds it at its
// next check; under wazero's watch the timer finds it and wazero closes
// the module.
func TestStopRunningCall(t *testing.T) {
	for _, stop := range []stopMode{stopInterrupt, stopWatch} {
		t.Run(stop.String(), func(t *testing.T) {
			m := newStopManager(t, stop)
			set := prepare(t, m, testPlugin("faulty", "faulty", func(p *config.Plugin) {
				p.CallTimeout = config.Duration(time.Minute)
				p.PoolSize = 1
			}))
			if got := set.plugins["faulty"].vm.stop; got != stop {
				t.Fatalf("plugin stops calls by %v, want %v", got, stop)
			}
			f := factoryOf(t, set, "faulty")
			x := newExchange("http://example.com/", "x-fault", "loop")
			s, err := f.NewStream(x)
			if err != nil {
				t.Fatal(err)
			}
			in := s.(*stream).in
			done := make(chan filter.Status)
			go func() { done <- s.OnRequestHeaders(x, true) }()
			time.Sleep(100 * time.Millisecond) // into the loop
			select {
			case st := <-done:
				t.Fatalf("the loop returned %v before the call was stopped", st)
			default:
			}
			start := time.Now()
			in.cc.expire()
			if stop == stopWatch {
				in.cc.check() // as the timer would
			}
			select {
			case st := <-done:
				if st != filter.Stop || x.Ctx.Response.StatusCode() != 503 {
					t.Errorf("status %v, code %d", st, x.Ctx.Response.StatusCode())
				}
				t.Logf("the loop stopped %v after its deadline passed", time.Since(start))
			case <-time.After(5 * time.Second):
				t.Fatal("the loop kept running after its deadline passed")
			}
			s.OnLog(x)
			s.Done(x)
		})
	}
}

// TestCallDeadline drives the watch's call context directly: calls that
// end in time never fire it, however long they keep the timer armed; a
// call that is blocked (it uses no CPU) far past its budget is not cut
// off; and a call that spins is cut off once its thread has used its
// budget, not earlier and not at the later deadline of a start-up call
// before it.
func TestCallDeadline(t *testing.T) {
	c := &callCtx{done: make(chan struct{}), timed: true}
	c.timer = time.AfterFunc(time.Hour, c.check)
	c.timer.Stop()
	const d = 50 * time.Millisecond
	for range 50 {
		c.begin(d)
		time.Sleep(time.Millisecond)
		c.end(false)
	}
	c.begin(d)
	time.Sleep(4 * d) // blocked, not running: no CPU used
	c.end(false)
	if c.fired.Load() {
		t.Fatal("fired although no call used its budget")
	}
	c.begin(time.Hour)
	c.end(true)
	start := time.Now()
	c.begin(d)
	cpu0 := threadCPU()
	var spins uint64
spin:
	for {
		select {
		case <-c.done:
			break spin
		default:
		}
		for range 1000 {
			spins++
		}
		if time.Since(start) > time.Minute {
			t.Fatal("a spinning call was never cut off")
		}
	}
	used := time.Duration(threadCPU() - cpu0)
	c.end(false)
	if used < d {
		t.Fatalf("fired after %v of CPU, before the budget of %v", used, d)
	}
	t.Logf("cut off after %v of CPU, %v of wall time (%d spins)", used, time.Since(start), spins)
}

// TestCheckDeadline drives the guard's check directly, as a guest's loop
// would: a call that ends within half its budget of wall time never locks
// its thread or reads the CPU clock; a call blocked past its budget (no
// CPU used) is not cut off; and a call that spins is cut off after at
// least its budget of CPU and at most one and a half.
func TestCheckDeadline(t *testing.T) {
	c := &callCtx{done: make(chan struct{})}
	const d = 60 * time.Millisecond
	var stack [1]uint64
	check := func() bool { checkDeadline(c, stack[:]); return stack[0] != 0 }

	for range 100 {
		c.begin(d)
		for range 3 {
			if check() {
				t.Fatal("a short call was cut off")
			}
		}
		if c.counting {
			t.Fatal("a short call counts its CPU time")
		}
		c.end(false)
	}

	c.begin(d)
	check()
	time.Sleep(3 * d) // blocked: past the checkpoint, little CPU used
	for range 3 {
		if check() {
			t.Fatal("a blocked call was cut off")
		}
	}
	c.end(false)

	// The thread stays the test's, so that its CPU clock is the call's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c.begin(d)
	start := time.Now()
	check()
	cpu0 := threadCPU()
	for !check() {
		for range 1000 {
			stack[0]++
		}
		if time.Since(start) > time.Minute {
			t.Fatal("a spinning call was never cut off")
		}
	}
	used := time.Duration(threadCPU() - cpu0)
	c.end(false)
	if used < d || used > 3*d/2+10*time.Millisecond {
		t.Fatalf("cut off after %v of CPU, want between %v and %v", used, d, 3*d/2)
	}
	t.Logf("cut off after %v of CPU, %v of wall time", used, time.Since(start))
}
