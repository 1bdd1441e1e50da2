// Package wasm runs proxy-wasm filters (ABI v0.2.1, as Envoy runs them) on
// wazero and presents each attachment of a plugin as a filter.Factory.
//
// The proxy builds one Manager at start. For every configuration it calls
// Prepare, which loads, verifies, compiles and starts the plugins off the
// request path and returns a Set; Set.Factory gives the filter factories
// of the snapshot; Activate is called once the proxy serves that snapshot.
// Plugins whose bytes and configuration did not change are carried over
// from one Set to the next; the others are closed when the last request
// that uses them finishes.
package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// Options configure a Manager. The zero value of each field is valid.
type Options struct {
	// CacheDir holds compiled code across restarts; "" keeps compiled code
	// in memory only.
	CacheDir string
	// Logger receives plugin logs and host events; nil discards them.
	Logger *zap.Logger
	// Registerer exports guest-defined and host metrics; nil keeps them
	// unexported.
	Registerer prometheus.Registerer
	// Upstreams serves proxy_http_call; nil makes every call fail.
	Upstreams filter.Upstreams
	// Node is the proxy's identity, read by the node.* properties.
	Node *filter.Node
	// Blobs returns the module with the given sha256 for plugins that name
	// no file; nil makes such plugins fail to load.
	Blobs func(sha256 string) ([]byte, error)
	// StartWait is how long Prepare waits for a plugin whose module or
	// settings changed before it puts the running version of that plugin
	// in the Set instead and lets the new one finish starting in the
	// background; the Set then switches to it by itself, request by
	// request, once it is ready. Zero means 2s; negative waits for every
	// start (a plugin with no running version is always waited for).
	StartWait time.Duration
	// IdleTimeout is how long an instance beyond a pool's first stays
	// idle before it is retired. Zero means 30s.
	IdleTimeout time.Duration
}

// Manager owns every running plugin. It is safe for concurrent use.
type Manager struct {
	opts    Options
	log     *zap.Logger
	cache   wazero.CompilationCache
	metrics *hostMetrics
	guest   *metricStore
	shared  *sharedStore

	mu       sync.Mutex
	running  map[string]*plugin // by identity (module digest and settings)
	vms      map[string]*vm     // by VM identity (vmIdentity)
	starting map[string]*start  // by identity: plugins starting in the background
	warm     []*plugin          // started in the background; the manager's reference is dropped at the next Activate
	active   *Set
	closed   bool
	starts   sync.WaitGroup // background starts; Close waits for them

	// stop is how plugins started from now on stop a call that overruns
	// its deadline; tests set it, the default is stopInterrupt.
	stop stopMode

	// builds bounds the instances built in the background at once.
	builds chan struct{}
	// compiles serialises the compilations of the same module bytes.
	compiles keyedMutex
	// idleAfter is how long an instance beyond a pool's first stays idle
	// before it is retired; tests shorten it.
	idleAfter time.Duration
}

// defaultIdleAfter is how long an idle instance is kept.
const defaultIdleAfter = 30 * time.Second

// acquireBuild waits for a build slot, or returns false once done closes.
func (m *Manager) acquireBuild(done <-chan struct{}) bool {
	select {
	case m.builds <- struct{}{}:
		return true
	case <-done:
		return false
	}
}

func (m *Manager) releaseBuild() { <-m.builds }

// stopMode is how a plugin's calls that overrun their deadline are
// stopped (see RATIONALE).
type stopMode int

const (
	// stopInterrupt: the module is rewritten by package guard, and the
	// guest checks its call's deadline itself every guard.Interval loop
	// iterations.
	stopInterrupt stopMode = iota
	// stopWatch: wazero's WithCloseOnContextDone, for a module the guard
	// cannot rewrite: a goroutine per call watches the call's context.
	stopWatch
	// stopNone: calls are never stopped. Only benchmarks use it, to
	// measure what stopping costs.
	stopNone
)

func (s stopMode) String() string {
	switch s {
	case stopInterrupt:
		return "interrupt"
	case stopWatch:
		return "watch"
	}
	return "none"
}

// NewManager returns a Manager with no plugins.
func NewManager(opts Options) (*Manager, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	var cache wazero.CompilationCache
	if opts.CacheDir != "" {
		if err := os.MkdirAll(opts.CacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("wasm compilation cache: %w", err)
		}
		c, err := wazero.NewCompilationCacheWithDir(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm compilation cache %q: %w", opts.CacheDir, err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	m := &Manager{
		opts:     opts,
		log:      log,
		cache:    cache,
		guest:    newMetricStore(),
		shared:   newSharedStore(),
		running:  make(map[string]*plugin),
		vms:      make(map[string]*vm),
		starting: make(map[string]*start),
		// Background builds are CPU-bound: at most half the CPUs, so
		// requests keep the rest.
		builds:    make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)),
		idleAfter: defaultIdleAfter,
	}
	if opts.IdleTimeout > 0 {
		m.idleAfter = opts.IdleTimeout
	}
	hm, err := newHostMetrics(opts.Registerer, m.guest)
	if err != nil {
		return nil, err
	}
	m.metrics = hm
	return m, nil
}

// Set is the plugins of one configuration, started and ready to serve.
// The proxy either activates it or closes it.
type Set struct {
	m        *Manager
	plugins  map[string]*plugin // guarded by m.mu once Prepare returned
	released bool               // guarded by m.mu
	once     sync.Once
	meta     atomic.Pointer[metaTables]
}

// start is a plugin starting in the background. Its fields are guarded
// by Manager.mu; done closes when it ended.
type start struct {
	done chan struct{}
	p    *plugin // the started plugin, when err is nil
	err  error
	// sets that serve the plugin's running version meanwhile, by name.
	sets []*Set
}

// Prepare loads and starts every plugin of the configuration, reusing the
// running plugins whose module and settings are unchanged. Plugins start
// at once, in the background; Prepare waits for each as Options.StartWait
// says. It runs off the request path; on error nothing of the new
// configuration is kept and the error names the plugin at fault.
func (m *Manager) Prepare(ctx context.Context, plugins []config.Plugin) (*Set, error) {
	set := &Set{m: m, plugins: make(map[string]*plugin, len(plugins))}
	starts := make([]*start, len(plugins))
	for i := range plugins {
		pc := &plugins[i]
		if _, dup := set.plugins[pc.Name]; dup {
			set.release()
			return nil, fmt.Errorf("plugin %q: defined twice", pc.Name)
		}
		set.plugins[pc.Name] = nil
		p, st, err := m.launch(pc)
		if err != nil {
			set.release()
			return nil, fmt.Errorf("plugin %q: %w", pc.Name, err)
		}
		set.plugins[pc.Name], starts[i] = p, st
	}
	for i, st := range starts {
		if st == nil {
			continue
		}
		name := plugins[i].Name
		p, err := m.await(ctx, set, name, st)
		if err != nil {
			set.release()
			return nil, fmt.Errorf("plugin %q: %w", name, err)
		}
		m.mu.Lock()
		set.plugins[name] = p
		m.mu.Unlock()
	}
	return set, nil
}

// launch returns the running plugin for pc when there is one, or the
// start of a new one, begun in the background unless it already is.
func (m *Manager) launch(pc *config.Plugin) (*plugin, *start, error) {
	code, sum, err := m.load(pc)
	if err != nil {
		return nil, nil, err
	}
	key, err := identity(pc, sum)
	if err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, errors.New("manager is closed")
	}
	if p := m.running[key]; p != nil && p.acquire() {
		return p, nil, nil
	}
	st := m.starting[key]
	if st == nil {
		st = &start{done: make(chan struct{})}
		m.starting[key] = st
		c := *pc
		m.starts.Add(1)
		go m.startInBackground(&c, code, sum, key, st)
	}
	return nil, st, nil
}

// await waits for a start as Options.StartWait says and returns the
// plugin the set serves for name: the started one, or, when the start
// takes longer and a version of the plugin runs in the active set, that
// version, replaced in the set once the start ends.
func (m *Manager) await(ctx context.Context, set *Set, name string, st *start) (*plugin, error) {
	wait := m.opts.StartWait
	if wait == 0 {
		wait = 2 * time.Second
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		select {
		case <-st.done:
			m.mu.Lock()
			p, err := st.p, st.err
			m.mu.Unlock()
			if err != nil {
				return nil, err
			}
			if !p.acquire() {
				return nil, errors.New("plugin closed while starting")
			}
			return p, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout:
			m.mu.Lock()
			var prev *plugin
			if m.active != nil {
				prev = m.active.plugins[name]
			}
			select {
			case <-st.done:
				m.mu.Unlock()
				continue // ended meanwhile
			default:
			}
			if prev == nil || !prev.acquire() {
				m.mu.Unlock()
				timeout = nil // nothing else can serve it: wait
				continue
			}
			st.sets = append(st.sets, set)
			m.mu.Unlock()
			m.log.Info("wasm plugin is still starting; its running version serves until it is ready",
				zap.String("plugin", name))
			return prev, nil
		}
	}
}

// startInBackground starts a plugin and hands it to the sets that serve
// its running version meanwhile.
func (m *Manager) startInBackground(pc *config.Plugin, code []byte, sum, key string, st *start) {
	defer m.starts.Done()
	p, err := m.startPlugin(context.Background(), pc, code, sum, key)
	var old []*plugin
	live := false // the live set switched to p
	m.mu.Lock()
	delete(m.starting, key)
	st.p, st.err = p, err
	switch {
	case err != nil:
		if len(st.sets) > 0 {
			m.log.Error("wasm plugin failed to start; its previous version keeps serving",
				zap.String("plugin", pc.Name), zap.Error(err))
		}
	case m.closed:
		m.mu.Unlock()
		close(st.done)
		p.shutdown()
		return
	default:
		m.running[key] = p
		m.warm = append(m.warm, p)
		for _, set := range st.sets {
			prev := set.plugins[pc.Name]
			if set.released || prev == nil || !p.acquire() {
				continue
			}
			set.plugins[pc.Name] = p
			old = append(old, prev)
			live = live || set == m.active
		}
	}
	m.mu.Unlock()
	if live {
		m.guest.activate(map[string]string{pc.Name: p.tags.signature()})
	}
	close(st.done)
	// Requests in flight finish on the version they started with; new
	// ones reach the started plugin through Manager.successor once it
	// closes.
	for _, prev := range old {
		prev.release()
	}
}

// load returns the module's bytes and their sha256, checked against the
// configured digest.
func (m *Manager) load(pc *config.Plugin) ([]byte, string, error) {
	var code []byte
	switch {
	case pc.File != "":
		b, err := os.ReadFile(pc.File)
		if err != nil {
			return nil, "", fmt.Errorf("reading module: %w", err)
		}
		code = b
	case pc.SHA256 != "":
		if m.opts.Blobs == nil {
			return nil, "", fmt.Errorf("module %s: no blob store to fetch it from", pc.SHA256)
		}
		b, err := m.opts.Blobs(pc.SHA256)
		if err != nil {
			return nil, "", fmt.Errorf("fetching module %s: %w", pc.SHA256, err)
		}
		code = b
	default:
		return nil, "", errors.New("neither file nor sha256 is set")
	}
	d := sha256.Sum256(code)
	sum := hex.EncodeToString(d[:])
	if pc.SHA256 != "" && pc.SHA256 != sum {
		return nil, "", fmt.Errorf("module digest is %s, configuration wants %s", sum, pc.SHA256)
	}
	return code, sum, nil
}

// identity is what must match for a running plugin to be reused: the
// module's digest and every setting.
func identity(pc *config.Plugin, sum string) (string, error) {
	c := *pc
	c.File, c.SHA256 = "", sum
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encoding settings: %w", err)
	}
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:]), nil
}

// Factory returns the filter factory for one attachment of a plugin of the
// set. A ref with its own Config gets a root context of its own,
// configured with it; attachments with equal configuration share one.
func (s *Set) Factory(ref config.FilterRef, routeName string) (filter.Factory, error) {
	s.m.mu.Lock()
	p := s.plugins[ref.Plugin]
	s.m.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("wasm plugin %q is not in this configuration", ref.Plugin)
	}
	var att *attachment
	if ref.Config == nil {
		att = p.defaultAttachment()
	} else {
		a, err := p.attach(ref.Config)
		if err != nil {
			return nil, fmt.Errorf("plugin %q on route %q: %w", ref.Plugin, routeName, err)
		}
		att = a
	}
	return &factory{m: s.m, p: p, att: att, route: routeName, meta: s.meta.Load()}, nil
}

// Close releases a set that will not be activated. Closing an active set,
// or closing twice, does nothing.
func (s *Set) Close() {
	s.m.mu.Lock()
	active := s.m.active == s
	s.m.mu.Unlock()
	if !active {
		s.release()
	}
}

func (s *Set) release() {
	s.once.Do(func() {
		s.m.mu.Lock()
		s.released = true
		plugins := make([]*plugin, 0, len(s.plugins))
		for _, p := range s.plugins {
			if p != nil {
				plugins = append(plugins, p)
			}
		}
		s.m.mu.Unlock()
		for _, p := range plugins {
			p.release()
		}
	})
}

// Activate records that the proxy now serves the snapshot built from set.
// Plugins of the previous set that set does not carry over are closed once
// their last request finishes.
func (m *Manager) Activate(set *Set) {
	m.mu.Lock()
	old := m.active
	m.active = set
	warm := m.warm
	m.warm = nil
	sigs := make(map[string]string, len(set.plugins))
	for name, p := range set.plugins {
		sigs[name] = p.tags.signature()
	}
	m.mu.Unlock()
	m.guest.activate(sigs)
	if old != nil && old != set {
		old.release()
	}
	for _, p := range warm {
		p.release()
	}
}

// Close stops every plugin at once. Requests still using one fail as their
// plugin's failure policy says.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	active := m.active
	m.active = nil
	warm := m.warm
	m.warm = nil
	running := make([]*plugin, 0, len(m.running))
	for _, p := range m.running {
		running = append(running, p)
	}
	m.mu.Unlock()
	if active != nil {
		active.release()
	}
	for _, p := range warm {
		p.release()
	}
	// Starts still running use the compilation cache: let them end
	// (they find the manager closed and close what they started).
	m.starts.Wait()
	for _, p := range running {
		p.shutdown()
	}
	m.mu.Lock()
	vms := make([]*vm, 0, len(m.vms))
	for _, v := range m.vms {
		vms = append(vms, v)
	}
	m.mu.Unlock()
	for _, v := range vms {
		v.shutdown()
	}
	m.metrics.unregister()
	return m.cache.Close(context.Background())
}

// forget drops a closed plugin from the reuse table.
func (m *Manager) forget(p *plugin) {
	m.mu.Lock()
	if m.running[p.key] == p {
		delete(m.running, p.key)
	}
	m.mu.Unlock()
}

// forgetVM drops a closed VM from the sharing table.
func (m *Manager) forgetVM(v *vm) {
	m.mu.Lock()
	if m.vms[v.key] == v {
		delete(m.vms, v.key)
	}
	m.mu.Unlock()
}

// successor returns the factory that replaces f after f's plugin closed: the
// same attachment on the plugin of that name in the active set.
func (m *Manager) successor(f *factory) *factory {
	m.mu.Lock()
	var p *plugin
	meta := f.meta
	if m.active != nil {
		p = m.active.plugins[f.p.cfg.Name]
		if mt := m.active.meta.Load(); mt != nil {
			meta = mt
		}
	}
	m.mu.Unlock()
	if p == nil || p == f.p {
		return nil
	}
	var att *attachment
	if f.att.index == 0 {
		att = p.defaultAttachment()
	} else {
		a, err := p.attach(f.att.config)
		if err != nil {
			return nil
		}
		att = a
	}
	return &factory{m: m, p: p, att: att, route: f.route, meta: meta}
}

// startTimeout bounds the start of one instance: _initialize, and the
// creation, start and configuration of its root contexts.
func startTimeout(call time.Duration) time.Duration {
	return max(20*call, 10*time.Second)
}

// Stats describe what the running plugins hold.
type Stats struct {
	Plugins   int // running plugins
	VMs       int // running VMs: plugins that share a vm_id share one
	Instances int // live instances, over every VM
	// LinearMemoryBytes is the size of the live instances' linear
	// memories, which Go's heap holds.
	LinearMemoryBytes uint64
}

// Stats returns what the running plugins hold now.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	vms := make([]*vm, 0, len(m.vms))
	for _, v := range m.vms {
		vms = append(vms, v)
	}
	st := Stats{Plugins: len(m.running), VMs: len(vms)}
	m.mu.Unlock()
	for _, v := range vms {
		for i := range v.slots {
			in := v.slots[i].cur.Load()
			if in == nil {
				continue
			}
			in.mu.Lock()
			if !in.broken {
				st.Instances++
				st.LinearMemoryBytes += uint64(in.mem.Size())
			}
			in.mu.Unlock()
		}
	}
	return st
}
