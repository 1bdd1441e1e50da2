package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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

// vm is one module running with one set of VM settings: its wazero
// runtime, its compiled code and a pool of instances. It is Envoy's VM:
// plugins whose configurations name the same module, vm_id and VM
// settings share one, each with root contexts of its own in every
// instance; a plugin with no vm_id has one of its own. Plugins hold
// references; the last release closes it. A reload that changes a
// plugin's configuration but not its VM keeps the VM and its instances:
// only root contexts come and go.
type vm struct {
	m   *Manager
	key string
	// name scopes shared data and queues (Envoy's VM id) and labels the
	// VM's metrics: the vm_id, or the plugin's name when it has none.
	name string
	log  *zap.Logger

	callTimeout time.Duration
	vmConfig    []byte

	rt       wazero.Runtime
	compiled wazero.CompiledModule
	allocFn  string // proxy_on_memory_allocate or malloc
	startFn  string // _initialize or _start, or ""
	mainFn   bool   // main(argc, argv) is called after _initialize

	// refs counts the plugins that use the VM; at zero it closes, and it
	// cannot be acquired again.
	refs atomic.Int64
	// ready closes when the start ended; err is its error.
	ready chan struct{}
	err   error

	mu      sync.Mutex    // serializes root contexts and instance replacement
	atts    []*attachment // guarded by mu: every plugin's live root context configurations
	nextAtt int           // guarded by mu: the index of the next attachment
	slots   []slot        // the pool's capacity; empty slots are filled on demand
	rr      atomic.Uint32
	seq     atomic.Uint64 // instance names
	growing atomic.Bool   // an instance is being added to the pool
	availMu sync.Mutex
	avail   chan struct{} // closed when an instance is added

	// Failures come in bursts: the first of a burst is logged, the others
	// counted, and the rebuilds of a burst back off.
	failMu       sync.Mutex
	burst        int       // failures in the current burst
	lastFail     time.Time // of the last failure
	backoffUntil atomic.Int64

	done      chan struct{} // closed when the VM closes
	closeOnce sync.Once

	compileTime time.Duration
	stop        stopMode      // how calls that overrun are stopped
	pages       atomic.Uint32 // memory of the first instance after start
}

// slot holds one instance of the pool, or nil while the pool is smaller
// than its capacity.
type slot struct {
	cur atomic.Pointer[instance]
}

// vmSettings are what must match for plugins to share a VM.
type vmSettings struct {
	SHA256        string           `json:"sha256"`
	VMID          string           `json:"vm_id,omitempty"`
	Plugin        string           `json:"plugin,omitempty"` // with no vm_id
	VMConfig      config.RawConfig `json:"vm_config,omitempty"`
	MemoryLimitMB int              `json:"memory_limit_mb,omitempty"`
	PoolSize      int              `json:"pool_size,omitempty"`
	CallTimeout   config.Duration  `json:"call_timeout,omitempty"`
}

// vmIdentity returns the key of the VM that runs pc, and the VM's name.
func vmIdentity(pc *config.Plugin, sum string) (key, name string, err error) {
	s := vmSettings{SHA256: sum, VMID: pc.VMID, VMConfig: pc.VMConfig,
		MemoryLimitMB: pc.MemoryLimitMB, PoolSize: pc.PoolSize, CallTimeout: pc.CallTimeout}
	name = pc.VMID
	if name == "" {
		s.Plugin, name = pc.Name, pc.Name
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", "", fmt.Errorf("encoding VM settings: %w", err)
	}
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:]), name, nil
}

// vmFor returns the VM that runs pc, with a reference for the caller:
// the running one when its module and settings match, else a new one,
// started here.
func (m *Manager) vmFor(ctx context.Context, pc *config.Plugin, code []byte, sum string) (*vm, error) {
	key, name, err := vmIdentity(pc, sum)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, errors.New("manager is closed")
	}
	v := m.vms[key]
	if v != nil && v.acquire() {
		m.mu.Unlock()
		select {
		case <-v.ready:
		case <-ctx.Done():
			v.release()
			return nil, ctx.Err()
		}
	} else {
		v = newVM(m, pc, key, name)
		m.vms[key] = v
		m.mu.Unlock()
		v.err = v.start(ctx, pc, code, sum)
		close(v.ready)
	}
	if v.err != nil {
		v.release()
		return nil, v.err
	}
	return v, nil
}

func newVM(m *Manager, pc *config.Plugin, key, name string) *vm {
	pool := pc.PoolSize
	if pool == 0 {
		// A guest runs one call at a time and at most GOMAXPROCS
		// goroutines run at once: more instances would only add memory.
		pool = runtime.GOMAXPROCS(0)
	}
	log := m.log.With(zap.String("plugin", name))
	if pc.VMID != "" {
		log = m.log.With(zap.String("vm_id", name))
	}
	v := &vm{
		m:           m,
		key:         key,
		name:        name,
		log:         log,
		callTimeout: pc.CallTimeout.Or(defaultCallTimeout),
		vmConfig:    pc.VMConfig,
		slots:       make([]slot, pool),
		ready:       make(chan struct{}),
		done:        make(chan struct{}),
	}
	v.refs.Store(1)
	return v
}

// start compiles the module and starts the pool's first instance, with no
// root context yet.
func (v *vm) start(ctx context.Context, pc *config.Plugin, code []byte, sum string) error {
	mem := pc.MemoryLimitMB
	if mem == 0 {
		mem = defaultMemoryLimitMB
	}
	compiled, err := v.compile(ctx, code, uint32(mem)*16)
	if err != nil {
		return err
	}
	v.compiled = compiled
	if err := v.inspect(); err != nil {
		return err
	}
	// The pool starts with one instance and grows while requests find
	// every instance busy (see pick and grow).
	v.mu.Lock()
	in, err := v.newInstance(0)
	if err == nil {
		v.slots[0].cur.Store(in)
	}
	v.mu.Unlock()
	if err != nil {
		return err
	}
	v.m.metrics.compileSeconds.WithLabelValues(v.name).Set(v.compileTime.Seconds())
	v.m.metrics.instances.WithLabelValues(v.name).Inc()
	go v.sweep()
	returnMemory()
	v.log.Debug("wasm VM started",
		zap.String("sha256", sum), zap.Duration("compile", v.compileTime), zap.Stringer("stop", v.stop),
		zap.Int("capacity", len(v.slots)), zap.Uint32("pages", v.pages.Load()))
	return nil
}

// compile creates the VM's runtime and compiles its module, rewritten
// by package guard so that calls check their own deadline. A module the guard
// cannot rewrite, or whose rewrite wazero refuses while it accepts the
// module itself, runs under wazero's per-call watch instead, and says so
// in the log.
func (v *vm) compile(ctx context.Context, code []byte, pages uint32) (wazero.CompiledModule, error) {
	v.stop = v.m.stop
	run := code
	if v.stop == stopInterrupt {
		g, err := guard.Instrument(code)
		if err != nil {
			v.log.Warn("wasm module not rewritten to check its deadline; its calls are watched by wazero instead", zap.Error(err))
			v.stop = stopWatch
		} else {
			run = g
		}
	}
	for {
		rc := wazero.NewRuntimeConfigCompiler().
			WithCompilationCache(v.m.cache).
			WithCloseOnContextDone(v.stop == stopWatch).
			WithMemoryLimitPages(pages)
		v.rt = wazero.NewRuntimeWithConfig(ctx, rc)
		if _, err := wasi_snapshot_preview1.Instantiate(ctx, v.rt); err != nil {
			v.rt.Close(context.Background())
			return nil, fmt.Errorf("wasi: %w", err)
		}
		if err := instantiateEnv(ctx, v.rt); err != nil {
			v.rt.Close(context.Background())
			return nil, fmt.Errorf("host functions: %w", err)
		}
		if v.stop == stopInterrupt {
			_, err := v.rt.NewHostModuleBuilder(guard.Module).NewFunctionBuilder().
				WithGoFunction(api.GoFunc(checkDeadline), nil, []api.ValueType{api.ValueTypeI32}).
				Export(guard.Check).Instantiate(ctx)
			if err != nil {
				v.rt.Close(context.Background())
				return nil, fmt.Errorf("host functions: %w", err)
			}
		}
		start := time.Now()
		unlock := v.m.compiles.lock(sha256.Sum256(run))
		compiled, err := v.rt.CompileModule(ctx, run)
		unlock()
		v.compileTime = time.Since(start)
		if err == nil {
			return compiled, nil
		}
		v.rt.Close(context.Background())
		if v.stop != stopInterrupt {
			return nil, fmt.Errorf("compiling module: %w", err)
		}
		v.log.Warn("wasm module's rewrite does not compile; trying the module as it is, watched by wazero", zap.Error(err))
		v.stop, run = stopWatch, code
	}
}

// inspect checks the module's exports: an ABI marker, an allocator, and
// the start convention.
func (v *vm) inspect() error {
	exp := v.compiled.ExportedFunctions()
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
		v.allocFn = "proxy_on_memory_allocate"
	case exp["malloc"] != nil:
		v.allocFn = "malloc"
	default:
		return errors.New("module exports neither proxy_on_memory_allocate nor malloc")
	}
	if _, ok := exp["_initialize"]; ok {
		v.startFn = "_initialize"
		if f, ok := exp["main"]; ok && len(f.ParamTypes()) == 2 {
			v.mainFn = true
		}
	} else if _, ok := exp["_start"]; ok {
		v.startFn = "_start"
	}
	if _, ok := v.compiled.ExportedMemories()["memory"]; !ok {
		return errors.New("module exports no memory named \"memory\"")
	}
	return nil
}

// acquire takes a reference unless the VM has closed.
func (v *vm) acquire() bool {
	for {
		n := v.refs.Load()
		if n <= 0 {
			return false
		}
		if v.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one closes the VM.
func (v *vm) release() {
	if v.refs.Add(-1) == 0 {
		v.shutdown()
	}
}

// shutdown closes the VM's instances and runtime. Requests that still
// hold an instance see it broken.
func (v *vm) shutdown() {
	v.closeOnce.Do(func() {
		v.refs.Store(0)
		v.m.forgetVM(v)
		close(v.done)
		v.mu.Lock()
		n := v.closeInstances()
		v.mu.Unlock()
		v.m.metrics.instances.WithLabelValues(v.name).Sub(float64(n))
		if v.rt != nil {
			v.rt.Close(context.Background())
		}
		v.log.Debug("wasm VM closed")
		returnMemory()
	})
}

func (v *vm) closeInstances() int {
	n := 0
	for i := range v.slots {
		in := v.slots[i].cur.Swap(nil)
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

// addRoot creates the root context of a new attachment of p in every live
// instance, and in every instance started from now on. On error no
// instance keeps it. Callers hold v.mu.
func (v *vm) addRoot(p *plugin, cfg []byte) (*attachment, error) {
	a := &attachment{p: p, index: v.nextAtt, config: append([]byte(nil), cfg...)}
	v.nextAtt++
	var started []*instance
	for i := range v.slots {
		in := v.slots[i].cur.Load()
		if in == nil {
			continue
		}
		in.mu.Lock()
		if !in.broken {
			if err := in.startRoot(a); err != nil {
				in.mu.Unlock()
				for _, s := range started {
					s.mu.Lock()
					if err := s.dropRoot(a); err != nil {
						v.failed(s, err)
					}
					s.mu.Unlock()
				}
				return nil, err
			}
			started = append(started, in)
		}
		in.mu.Unlock()
	}
	v.atts = append(v.atts, a)
	return a, nil
}

// dropRoots deletes the root contexts of atts, which belong to a closed
// plugin, from every live instance. Other plugins' root contexts and
// requests go on undisturbed. Callers hold v.mu.
func (v *vm) dropRoots(atts []*attachment) {
	kept := v.atts[:0]
	for _, a := range v.atts {
		if a.p != atts[0].p {
			kept = append(kept, a)
		}
	}
	clear(v.atts[len(kept):])
	v.atts = kept
	for i := range v.slots {
		in := v.slots[i].cur.Load()
		if in == nil {
			continue
		}
		in.mu.Lock()
		for _, a := range atts {
			if in.broken {
				break
			}
			if err := in.dropRoot(a); err != nil {
				v.failed(in, err)
			}
		}
		in.mu.Unlock()
	}
}

// returnMemory gives freed memory back to the OS at once, rather than at
// the pace of Go's scavenger: the memory of closed VMs and plugins and of
// retired instances (tens of MiB of heap: linear memories and the
// runtime's module structures), and the garbage a VM's start leaves (the
// module's bytes, its rewrite, compiled code read from the cache before
// it is mapped: as much again as the code). So a proxy's RSS stays flat
// across reloads and falls back when a pool shrinks. Calls less than a
// second apart share one collection.
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
func (v *vm) pick() *instance {
	n := len(v.slots)
	start := int(v.rr.Add(1) % uint32(n))
	var best *instance
	bestActive := int32(1<<31 - 1)
	for i := 0; i < n; i++ {
		in := v.slots[(start+i)%n].cur.Load()
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
		v.grow()
	} else {
		best.mu.Unlock()
	}
	return best
}

// grow adds an instance to the pool in the background, unless the pool is
// full, an instance is already being added, or the VM is backing off
// after failures.
func (v *vm) grow() {
	if v.backoffUntil.Load() > monotonic() || !v.growing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer v.growing.Store(false)
		if !v.m.acquireBuild(v.done) {
			return
		}
		defer v.m.releaseBuild()
		v.mu.Lock()
		defer v.mu.Unlock()
		select {
		case <-v.done:
			return
		default:
		}
		free := -1
		for i := range v.slots {
			if v.slots[i].cur.Load() == nil {
				free = i
				break
			}
		}
		if free < 0 {
			return
		}
		in, err := v.newInstance(free)
		if err != nil {
			v.log.Warn("adding a wasm instance", zap.Error(err))
			v.backoffUntil.Store(monotonic() + int64(time.Second))
			return
		}
		v.added(in)
		v.m.metrics.instances.WithLabelValues(v.name).Inc()
		v.m.metrics.grown.WithLabelValues(v.name).Inc()
	}()
}

// sweep retires instances that stayed idle, until the VM closes.
func (v *vm) sweep() {
	t := time.NewTicker(v.m.idleAfter / 2)
	defer t.Stop()
	for {
		select {
		case <-v.done:
			return
		case <-t.C:
			v.retireIdle()
		}
	}
}

// errRetired closes an instance the pool no longer needs.
var errRetired = errors.New("instance retired from an idle pool")

// retireIdle closes the instances idle for longer than the manager's
// idleAfter, keeping one live instance. An instance with HTTP calls, or
// gRPC calls or streams, in flight stays.
func (v *vm) retireIdle() {
	v.mu.Lock()
	defer v.mu.Unlock()
	live := 0
	for i := range v.slots {
		if in := v.slots[i].cur.Load(); in != nil && !in.dead.Load() {
			live++
		}
	}
	old := monotonic() - int64(v.m.idleAfter)
	for i := len(v.slots) - 1; i >= 0 && live > 1; i-- {
		in := v.slots[i].cur.Load()
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
		v.slots[i].cur.CompareAndSwap(in, nil)
		live--
		v.m.metrics.instances.WithLabelValues(v.name).Dec()
		v.m.metrics.retired.WithLabelValues(v.name).Inc()
		returnMemory()
	}
}

// failed handles a failed call into in: it counts the failure, throws the
// instance away and schedules its replacement. Callers hold in.mu.
func (v *vm) failed(in *instance, err error) {
	if in.broken {
		return
	}
	kind := failureKind(err)
	v.m.metrics.failures.WithLabelValues(v.name, kind).Inc()
	n := v.noteFailure()
	if n == 1 {
		v.log.Warn("wasm plugin instance failed; replacing it (more failures within a minute are counted in metrics, not logged)",
			zap.String("kind", kind), zap.Int("slot", in.slot), zap.Error(err))
	} else {
		v.log.Debug("wasm plugin instance failed again",
			zap.String("kind", kind), zap.Int("slot", in.slot), zap.Int("burst", n), zap.Error(err))
	}
	in.discard(err)
	v.m.metrics.instances.WithLabelValues(v.name).Dec()
	go v.replace(in, n)
}

// noteFailure counts a failure in the VM's current burst (failures
// less than a minute apart) and returns its rank in the burst.
func (v *vm) noteFailure() int {
	v.failMu.Lock()
	defer v.failMu.Unlock()
	now := time.Now()
	if now.Sub(v.lastFail) > time.Minute {
		if v.burst > 1 {
			v.log.Info("wasm plugin failure burst ended", zap.Int("failures", v.burst))
		}
		v.burst = 0
	}
	v.burst++
	v.lastFail = now
	return v.burst
}

// rebuildDelay is how long a rebuild waits after the n-th failure of a
// burst: none for the first, then 50ms doubling up to 10s.
func (v *vm) rebuildDelay(n int) time.Duration {
	if n == 1 {
		return 0
	}
	return min(50*time.Millisecond<<min(n-2, 8), 10*time.Second)
}

// added stores in in its slot and wakes requests waiting for an instance.
// Callers hold v.mu.
func (v *vm) added(in *instance) {
	v.slots[in.slot].cur.Store(in)
	v.availMu.Lock()
	if v.avail != nil {
		close(v.avail)
		v.avail = nil
	}
	v.availMu.Unlock()
}

// waitInstance waits, at most d, for a live instance when the pool has
// none (its last one broke and is being rebuilt).
func (v *vm) waitInstance(d time.Duration) *instance {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		v.availMu.Lock()
		if v.avail == nil {
			v.avail = make(chan struct{})
		}
		ch := v.avail
		v.availMu.Unlock()
		if in := v.pick(); in != nil {
			return in
		}
		select {
		case <-ch:
		case <-v.done:
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
func (v *vm) replace(old *instance, n int) {
	delay := v.rebuildDelay(n)
	if n > 1 {
		v.m.metrics.backoffs.WithLabelValues(v.name).Inc()
	}
	for {
		v.m.metrics.backoff.WithLabelValues(v.name).Set(delay.Seconds())
		v.backoffUntil.Store(monotonic() + int64(delay))
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-v.done:
				t.Stop()
				return
			case <-t.C:
			}
		}
		if !v.m.acquireBuild(v.done) {
			return
		}
		v.mu.Lock()
		select {
		case <-v.done:
			v.mu.Unlock()
			v.m.releaseBuild()
			return
		default:
		}
		in, err := v.newInstance(old.slot)
		if err == nil {
			v.added(in)
			v.mu.Unlock()
			v.m.releaseBuild()
			v.m.metrics.backoff.WithLabelValues(v.name).Set(0)
			v.m.metrics.replacements.WithLabelValues(v.name).Inc()
			v.m.metrics.instances.WithLabelValues(v.name).Inc()
			return
		}
		v.mu.Unlock()
		v.m.releaseBuild()
		if m := v.noteFailure(); m == 1 {
			v.log.Error("recreating wasm instance", zap.Int("slot", old.slot), zap.Error(err))
		}
		v.m.metrics.backoffs.WithLabelValues(v.name).Inc()
		delay = min(max(2*delay, 50*time.Millisecond), 10*time.Second)
	}
}
