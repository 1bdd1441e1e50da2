package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/wasm/internal/guard"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// Defaults of config.Plugin's zero values.
const (
	defaultMemoryLimitMB = 256
	defaultCallTimeout   = 100 * time.Millisecond
	defaultMaxBodyBytes  = 1 << 20
)

// plugin is one module with one set of settings, running: its wazero
// runtime, its compiled code and a pool of instances. Sets and requests
// hold references; the last release closes it.
type plugin struct {
	m      *Manager
	cfg    config.Plugin
	key    string
	sha256 string
	log    *zap.Logger

	callTimeout time.Duration
	maxBody     int
	allowed     []string

	rt       wazero.Runtime
	compiled wazero.CompiledModule
	allocFn  string // proxy_on_memory_allocate or malloc
	startFn  string // _initialize or _start, or ""
	mainFn   bool   // main(argc, argv) is called after _initialize

	// refs counts the sets and the requests that use the plugin; at zero
	// it closes, and it cannot be acquired again.
	refs atomic.Int64

	mu          sync.Mutex // serializes attachments and instance replacement
	attachments atomic.Pointer[[]*attachment]
	slots       []slot // the pool's capacity; empty slots are filled on demand
	rr          atomic.Uint32
	seq         atomic.Uint64 // instance names
	growing     atomic.Bool   // an instance is being added to the pool
	availMu     sync.Mutex
	avail       chan struct{} // closed when an instance is added

	// Failures come in bursts: the first of a burst is logged, the others
	// counted, and the rebuilds of a burst back off.
	failMu       sync.Mutex
	burst        int       // failures in the current burst
	lastFail     time.Time // of the last failure
	backoffUntil atomic.Int64

	done      chan struct{} // closed when the plugin closes
	closeOnce sync.Once

	// CompileTime and InstanceBytes are measured while starting.
	compileTime time.Duration
	stop        stopMode      // how calls that overrun are stopped
	pages       atomic.Uint32 // memory of the first instance after start
}

// slot holds one instance of the pool, or nil while the pool is smaller
// than its capacity.
type slot struct {
	cur atomic.Pointer[instance]
}

// attachment is one root context configuration: the plugin's own (index
// 0) or a per-route override.
type attachment struct {
	index  int
	config []byte
}

func (m *Manager) startPlugin(ctx context.Context, pc *config.Plugin, code []byte, sum, key string) (*plugin, error) {
	mem := pc.MemoryLimitMB
	if mem == 0 {
		mem = defaultMemoryLimitMB
	}
	pool := pc.PoolSize
	if pool == 0 {
		// A guest runs one call at a time and at most GOMAXPROCS
		// goroutines run at once: more instances would only add memory.
		pool = runtime.GOMAXPROCS(0)
	}
	maxBody := int(pc.MaxBodyBytes)
	if maxBody == 0 {
		maxBody = defaultMaxBodyBytes
	}
	p := &plugin{
		m:           m,
		cfg:         *pc,
		key:         key,
		sha256:      sum,
		log:         m.log.With(zap.String("plugin", pc.Name)),
		callTimeout: pc.CallTimeout.Or(defaultCallTimeout),
		maxBody:     maxBody,
		allowed:     append([]string(nil), pc.AllowedClusters...),
		slots:       make([]slot, pool),
		done:        make(chan struct{}),
	}
	p.refs.Store(1)
	atts := []*attachment{{index: 0, config: pc.Config}}
	p.attachments.Store(&atts)

	compiled, err := p.compile(ctx, code, uint32(mem)*16)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*plugin, error) {
		p.rt.Close(context.Background())
		return nil, err
	}
	p.compiled = compiled
	if err := p.inspect(); err != nil {
		return fail(err)
	}
	// The pool starts with one instance and grows while requests find
	// every instance busy (see pick and grow).
	in, err := p.newInstance(0)
	if err != nil {
		return fail(err)
	}
	p.slots[0].cur.Store(in)
	m.metrics.compileSeconds.WithLabelValues(pc.Name).Set(p.compileTime.Seconds())
	m.metrics.instances.WithLabelValues(pc.Name).Inc()
	go p.sweep()
	p.log.Debug("wasm plugin started",
		zap.String("sha256", sum), zap.Duration("compile", p.compileTime), zap.Stringer("stop", p.stop),
		zap.Int("capacity", len(p.slots)), zap.Uint32("pages", p.pages.Load()))
	return p, nil
}

// compile creates the plugin's runtime and compiles its module, rewritten
// by package guard so that calls check their own deadline. A module the guard
// cannot rewrite, or whose rewrite wazero refuses while it accepts the
// module itself, runs under wazero's per-call watch instead, and says so
// in the log.
func (p *plugin) compile(ctx context.Context, code []byte, pages uint32) (wazero.CompiledModule, error) {
	p.stop = p.m.stop
	run := code
	if p.stop == stopInterrupt {
		g, err := guard.Instrument(code)
		if err != nil {
			p.log.Warn("wasm module not rewritten to check its deadline; its calls are watched by wazero instead", zap.Error(err))
			p.stop = stopWatch
		} else {
			run = g
		}
	}
	for {
		rc := wazero.NewRuntimeConfigCompiler().
			WithCompilationCache(p.m.cache).
			WithCloseOnContextDone(p.stop == stopWatch).
			WithMemoryLimitPages(pages)
		p.rt = wazero.NewRuntimeWithConfig(ctx, rc)
		if _, err := wasi_snapshot_preview1.Instantiate(ctx, p.rt); err != nil {
			p.rt.Close(context.Background())
			return nil, fmt.Errorf("wasi: %w", err)
		}
		if err := instantiateEnv(ctx, p.rt); err != nil {
			p.rt.Close(context.Background())
			return nil, fmt.Errorf("host functions: %w", err)
		}
		if p.stop == stopInterrupt {
			_, err := p.rt.NewHostModuleBuilder(guard.Module).NewFunctionBuilder().
				WithGoFunction(api.GoFunc(checkDeadline), nil, []api.ValueType{api.ValueTypeI32}).
				Export(guard.Check).Instantiate(ctx)
			if err != nil {
				p.rt.Close(context.Background())
				return nil, fmt.Errorf("host functions: %w", err)
			}
		}
		start := time.Now()
		compiled, err := p.rt.CompileModule(ctx, run)
		p.compileTime = time.Since(start)
		if err == nil {
			return compiled, nil
		}
		p.rt.Close(context.Background())
		if p.stop != stopInterrupt {
			return nil, fmt.Errorf("compiling module: %w", err)
		}
		p.log.Warn("wasm module's rewrite does not compile; trying the module as it is, watched by wazero", zap.Error(err))
		p.stop, run = stopWatch, code
	}
}

// inspect checks the module's exports: an ABI marker, an allocator, and
// the start convention.
func (p *plugin) inspect() error {
	exp := p.compiled.ExportedFunctions()
	_, v020 := exp[abi.MarkerV020]
	_, v021 := exp[abi.MarkerV021]
	if !v020 && !v021 {
		if _, v010 := exp["proxy_abi_version_0_1_0"]; v010 {
			return errors.New("module targets proxy-wasm ABI v0.1.0; only v0.2.0 and v0.2.1 are supported")
		}
		return fmt.Errorf("module exports neither %s nor %s: not a proxy-wasm v0.2 module", abi.MarkerV020, abi.MarkerV021)
	}
	switch {
	case exp["proxy_on_memory_allocate"] != nil:
		p.allocFn = "proxy_on_memory_allocate"
	case exp["malloc"] != nil:
		p.allocFn = "malloc"
	default:
		return errors.New("module exports neither proxy_on_memory_allocate nor malloc")
	}
	if _, ok := exp["_initialize"]; ok {
		p.startFn = "_initialize"
		if f, ok := exp["main"]; ok && len(f.ParamTypes()) == 2 {
			p.mainFn = true
		}
	} else if _, ok := exp["_start"]; ok {
		p.startFn = "_start"
	}
	if _, ok := p.compiled.ExportedMemories()["memory"]; !ok {
		return errors.New("module exports no memory named \"memory\"")
	}
	return nil
}

func (p *plugin) defaultAttachment() *attachment { return (*p.attachments.Load())[0] }

// attach returns the attachment configured with cfg, creating its root
// context in every live instance when it is new.
func (p *plugin) attach(cfg []byte) (*attachment, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	atts := *p.attachments.Load()
	for _, a := range atts {
		if a.index > 0 && bytes.Equal(a.config, cfg) {
			return a, nil
		}
	}
	a := &attachment{index: len(atts), config: append([]byte(nil), cfg...)}
	for i := range p.slots {
		in := p.slots[i].cur.Load()
		if in == nil {
			continue
		}
		in.mu.Lock()
		if !in.broken {
			if err := in.startRoot(a); err != nil {
				in.mu.Unlock()
				return nil, err
			}
		}
		in.mu.Unlock()
	}
	next := append(append([]*attachment(nil), atts...), a)
	p.attachments.Store(&next)
	return a, nil
}

// acquire takes a reference unless the plugin has closed.
func (p *plugin) acquire() bool {
	for {
		n := p.refs.Load()
		if n <= 0 {
			return false
		}
		if p.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one closes the plugin, off the
// caller's goroutine.
func (p *plugin) release() {
	if p.refs.Add(-1) == 0 {
		go p.shutdown()
	}
}

// shutdown closes the plugin's instances and runtime. Requests that still
// hold an instance see it broken.
func (p *plugin) shutdown() {
	p.closeOnce.Do(func() {
		p.refs.Store(0)
		p.m.forget(p)
		close(p.done)
		p.mu.Lock()
		n := p.closeInstances()
		p.mu.Unlock()
		p.m.metrics.instances.WithLabelValues(p.cfg.Name).Sub(float64(n))
		p.m.shared.dropPlugin(p)
		p.rt.Close(context.Background())
		p.log.Debug("wasm plugin closed")
		returnMemory()
	})
}

func (p *plugin) closeInstances() int {
	n := 0
	for i := range p.slots {
		in := p.slots[i].cur.Swap(nil)
		if in == nil {
			continue
		}
		in.mu.Lock()
		if !in.broken {
			n++
		}
		in.discard(errPluginClosed)
		in.mu.Unlock()
	}
	return n
}

// returnMemory gives the memory of closed plugins (tens of MiB of heap:
// linear memories and the runtime's module structures) back to the OS at
// once, rather than at the pace of Go's scavenger, so that a proxy's RSS
// stays flat across reloads. Closings less than a second apart share one
// collection.
func returnMemory() {
	if !freeing.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(time.Second, func() {
		freeing.Store(false)
		debug.FreeOSMemory()
	})
}

var freeing atomic.Bool

var (
	errPluginClosed = errors.New("plugin closed")
	errBroken       = errors.New("instance broken by an earlier failure")
)

// pick returns an instance for a new request: an idle one when there is
// one, else the least busy, and then, if that one is in a call, it asks
// for one more instance. It returns nil when no instance is live.
func (p *plugin) pick() *instance {
	n := len(p.slots)
	start := int(p.rr.Add(1) % uint32(n))
	var best *instance
	bestActive := int32(1<<31 - 1)
	for i := 0; i < n; i++ {
		in := p.slots[(start+i)%n].cur.Load()
		if in == nil || in.dead.Load() || in.retired.Load() {
			continue
		}
		a := in.active.Load()
		if a == 0 {
			return in
		}
		if a < bestActive {
			best, bestActive = in, a
		}
	}
	// Requests are pinned for their whole life but hold the instance only
	// during callbacks: grow only when the chosen instance is in a call
	// now, so that this request would wait for it.
	if best == nil || !best.mu.TryLock() {
		p.grow()
	} else {
		best.mu.Unlock()
	}
	return best
}

// grow adds an instance to the pool in the background, unless the pool is
// full, an instance is already being added, or the plugin is backing off
// after failures.
func (p *plugin) grow() {
	if p.backoffUntil.Load() > monotonic() || !p.growing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer p.growing.Store(false)
		if !p.m.acquireBuild(p.done) {
			return
		}
		defer p.m.releaseBuild()
		p.mu.Lock()
		defer p.mu.Unlock()
		select {
		case <-p.done:
			return
		default:
		}
		free := -1
		for i := range p.slots {
			if p.slots[i].cur.Load() == nil {
				free = i
				break
			}
		}
		if free < 0 {
			return
		}
		in, err := p.newInstance(free)
		if err != nil {
			p.log.Warn("adding a wasm instance", zap.Error(err))
			p.backoffUntil.Store(monotonic() + int64(time.Second))
			return
		}
		p.added(in)
		p.m.metrics.instances.WithLabelValues(p.cfg.Name).Inc()
		p.m.metrics.grown.WithLabelValues(p.cfg.Name).Inc()
	}()
}

// sweep retires instances that stayed idle, until the plugin closes.
func (p *plugin) sweep() {
	t := time.NewTicker(p.m.idleAfter / 2)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
			p.retireIdle()
		}
	}
}

// errRetired closes an instance the pool no longer needs.
var errRetired = errors.New("instance retired from an idle pool")

// retireIdle closes the instances idle for longer than the manager's
// idleAfter, keeping one live instance. An instance with HTTP calls, or
// gRPC calls or streams, in flight stays.
func (p *plugin) retireIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	live := 0
	for i := range p.slots {
		if in := p.slots[i].cur.Load(); in != nil && !in.dead.Load() {
			live++
		}
	}
	old := monotonic() - int64(p.m.idleAfter)
	for i := len(p.slots) - 1; i >= 0 && live > 1; i-- {
		in := p.slots[i].cur.Load()
		if in == nil || in.dead.Load() || in.active.Load() != 0 || in.lastUsed.Load() > old {
			continue
		}
		// NewStream counts itself active before it checks retired: one
		// of the two sees the other.
		in.retired.Store(true)
		if in.active.Load() != 0 {
			in.retired.Store(false)
			continue
		}
		in.mu.Lock()
		if len(in.calls) > 0 || len(in.grpc.calls) > 0 {
			in.mu.Unlock()
			in.retired.Store(false)
			continue
		}
		in.discard(errRetired)
		in.mu.Unlock()
		p.slots[i].cur.CompareAndSwap(in, nil)
		live--
		p.m.metrics.instances.WithLabelValues(p.cfg.Name).Dec()
		p.m.metrics.retired.WithLabelValues(p.cfg.Name).Inc()
	}
}

// failed handles a failed call into in: it counts the failure, throws the
// instance away and schedules its replacement. Callers hold in.mu.
func (p *plugin) failed(in *instance, err error) {
	if in.broken {
		return
	}
	kind := failureKind(err)
	p.m.metrics.failures.WithLabelValues(p.cfg.Name, kind).Inc()
	n := p.noteFailure()
	if n == 1 {
		p.log.Warn("wasm plugin instance failed; replacing it (more failures within a minute are counted in metrics, not logged)",
			zap.String("kind", kind), zap.Int("slot", in.slot), zap.Error(err))
	} else {
		p.log.Debug("wasm plugin instance failed again",
			zap.String("kind", kind), zap.Int("slot", in.slot), zap.Int("burst", n), zap.Error(err))
	}
	in.discard(err)
	p.m.metrics.instances.WithLabelValues(p.cfg.Name).Dec()
	go p.replace(in, n)
}

// noteFailure counts a failure in the plugin's current burst (failures
// less than a minute apart) and returns its rank in the burst.
func (p *plugin) noteFailure() int {
	p.failMu.Lock()
	defer p.failMu.Unlock()
	now := time.Now()
	if now.Sub(p.lastFail) > time.Minute {
		if p.burst > 1 {
			p.log.Info("wasm plugin failure burst ended", zap.Int("failures", p.burst))
		}
		p.burst = 0
	}
	p.burst++
	p.lastFail = now
	return p.burst
}

// rebuildDelay is how long a rebuild waits after the n-th failure of a
// burst: none for the first, then 50ms doubling up to 10s.
func (p *plugin) rebuildDelay(n int) time.Duration {
	if n == 1 {
		return 0
	}
	return min(50*time.Millisecond<<min(n-2, 8), 10*time.Second)
}

// added stores in in its slot and wakes requests waiting for an instance.
// Callers hold p.mu.
func (p *plugin) added(in *instance) {
	p.slots[in.slot].cur.Store(in)
	p.availMu.Lock()
	if p.avail != nil {
		close(p.avail)
		p.avail = nil
	}
	p.availMu.Unlock()
}

// waitInstance waits, at most d, for a live instance when the pool has
// none (its last one broke and is being rebuilt).
func (p *plugin) waitInstance(d time.Duration) *instance {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		p.availMu.Lock()
		if p.avail == nil {
			p.avail = make(chan struct{})
		}
		ch := p.avail
		p.availMu.Unlock()
		if in := p.pick(); in != nil {
			return in
		}
		select {
		case <-ch:
		case <-p.done:
			return nil
		case <-deadline.C:
			return nil
		}
	}
}

// replace puts a new instance in the slot of a broken one, in the
// background: after the burst's backoff, and among at most the manager's
// bound of concurrent builds, so other requests are served by the rest of
// the pool meanwhile.
func (p *plugin) replace(old *instance, n int) {
	delay := p.rebuildDelay(n)
	if n > 1 {
		p.m.metrics.backoffs.WithLabelValues(p.cfg.Name).Inc()
	}
	for {
		p.m.metrics.backoff.WithLabelValues(p.cfg.Name).Set(delay.Seconds())
		p.backoffUntil.Store(monotonic() + int64(delay))
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-p.done:
				t.Stop()
				return
			case <-t.C:
			}
		}
		if !p.m.acquireBuild(p.done) {
			return
		}
		p.mu.Lock()
		select {
		case <-p.done:
			p.mu.Unlock()
			p.m.releaseBuild()
			return
		default:
		}
		in, err := p.newInstance(old.slot)
		if err == nil {
			p.added(in)
			p.mu.Unlock()
			p.m.releaseBuild()
			p.m.metrics.backoff.WithLabelValues(p.cfg.Name).Set(0)
			p.m.metrics.replacements.WithLabelValues(p.cfg.Name).Inc()
			p.m.metrics.instances.WithLabelValues(p.cfg.Name).Inc()
			return
		}
		p.mu.Unlock()
		p.m.releaseBuild()
		if m := p.noteFailure(); m == 1 {
			p.log.Error("recreating wasm instance", zap.Int("slot", old.slot), zap.Error(err))
		}
		p.m.metrics.backoffs.WithLabelValues(p.cfg.Name).Inc()
		delay = min(max(2*delay, 50*time.Millisecond), 10*time.Second)
	}
}

// allows reports whether the plugin may call cluster.
func (p *plugin) allows(cluster []byte) bool {
	for _, c := range p.allowed {
		if c == string(cluster) {
			return true
		}
	}
	return false
}
