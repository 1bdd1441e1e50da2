package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
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
	slots       []slot
	rr          atomic.Uint32
	seq         atomic.Uint64 // instance names

	done      chan struct{} // closed when the plugin closes
	closeOnce sync.Once

	// CompileTime and InstanceBytes are measured while starting.
	compileTime time.Duration
	stop        stopMode      // how calls that overrun are stopped
	pages       atomic.Uint32 // memory of the first instance after start
}

// slot holds one instance of the pool and the count of its recent
// failures, which sets the backoff of its replacement.
type slot struct {
	cur      atomic.Pointer[instance]
	failures int // guarded by plugin.mu
	lastFail time.Time
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
		pool = runtime.GOMAXPROCS(0) * 2
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
	for i := range p.slots {
		in, err := p.newInstance(i)
		if err != nil {
			p.closeInstances()
			return fail(err)
		}
		p.slots[i].cur.Store(in)
	}
	m.metrics.compileSeconds.WithLabelValues(pc.Name).Set(p.compileTime.Seconds())
	m.metrics.instances.WithLabelValues(pc.Name).Add(float64(len(p.slots)))
	p.log.Debug("wasm plugin started",
		zap.String("sha256", sum), zap.Duration("compile", p.compileTime), zap.Stringer("stop", p.stop),
		zap.Int("instances", len(p.slots)), zap.Uint32("pages", p.pages.Load()))
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

var (
	errPluginClosed = errors.New("plugin closed")
	errBroken       = errors.New("instance broken by an earlier failure")
)

// pick returns an instance for a new request: an idle one when there is
// one, else the least busy. It returns nil when every instance is broken.
func (p *plugin) pick() *instance {
	n := len(p.slots)
	start := int(p.rr.Add(1) % uint32(n))
	var best *instance
	bestActive := int32(1<<31 - 1)
	for i := 0; i < n; i++ {
		in := p.slots[(start+i)%n].cur.Load()
		if in == nil || in.dead.Load() {
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
	return best
}

// failed handles a failed call into in: it counts the failure, throws the
// instance away and schedules its replacement. Callers hold in.mu.
func (p *plugin) failed(in *instance, err error) {
	if in.broken {
		return
	}
	kind := failureKind(err)
	p.m.metrics.failures.WithLabelValues(p.cfg.Name, kind).Inc()
	p.log.Warn("wasm plugin instance failed; replacing it",
		zap.String("kind", kind), zap.Int("slot", in.slot), zap.Error(err))
	in.discard(err)
	p.m.metrics.instances.WithLabelValues(p.cfg.Name).Dec()
	go p.replace(in)
}

// replace puts a new instance in the slot of a broken one. Repeated
// failures of a slot back off exponentially, from 50ms up to 10s; the
// reload policy rebuilds the first time at once.
func (p *plugin) replace(old *instance) {
	s := &p.slots[old.slot]
	p.mu.Lock()
	if time.Since(s.lastFail) > time.Minute {
		s.failures = 0
	}
	s.failures++
	s.lastFail = time.Now()
	n := s.failures
	p.mu.Unlock()
	delay := 50 * time.Millisecond << min(n-1, 8)
	if n == 1 && p.cfg.FailurePolicy == config.FailReload {
		delay = 0
	}
	for {
		if delay > 10*time.Second {
			delay = 10 * time.Second
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-p.done:
				t.Stop()
				return
			case <-t.C:
			}
		}
		p.mu.Lock()
		select {
		case <-p.done:
			p.mu.Unlock()
			return
		default:
		}
		in, err := p.newInstance(old.slot)
		if err == nil {
			p.slots[old.slot].cur.Store(in)
			p.mu.Unlock()
			p.m.metrics.replacements.WithLabelValues(p.cfg.Name).Inc()
			p.m.metrics.instances.WithLabelValues(p.cfg.Name).Inc()
			return
		}
		p.mu.Unlock()
		p.log.Error("recreating wasm instance", zap.Int("slot", old.slot), zap.Error(err))
		delay = max(2*delay, 50*time.Millisecond)
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
