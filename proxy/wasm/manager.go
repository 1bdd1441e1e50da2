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
	"sync"
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
}

// Manager owns every running plugin. It is safe for concurrent use.
type Manager struct {
	opts    Options
	log     *zap.Logger
	cache   wazero.CompilationCache
	metrics *hostMetrics
	guest   *metricStore
	shared  *sharedStore

	mu      sync.Mutex
	running map[string]*plugin // by identity (module digest and settings)
	active  *Set
	closed  bool

	// stop is how plugins started from now on stop a call that overruns
	// its deadline; tests set it, the default is stopInterrupt.
	stop stopMode
}

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
		opts:    opts,
		log:     log,
		cache:   cache,
		guest:   newMetricStore(),
		shared:  newSharedStore(),
		running: make(map[string]*plugin),
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
	m       *Manager
	plugins map[string]*plugin
	once    sync.Once
}

// Prepare loads and starts every plugin of the configuration, reusing the
// running plugins whose module and settings are unchanged. It runs off the
// request path; on error nothing of the new configuration is kept and the
// error names the plugin at fault.
func (m *Manager) Prepare(ctx context.Context, plugins []config.Plugin) (*Set, error) {
	set := &Set{m: m, plugins: make(map[string]*plugin, len(plugins))}
	for i := range plugins {
		pc := plugins[i]
		p, err := m.preparePlugin(ctx, &pc)
		if err != nil {
			set.release()
			return nil, fmt.Errorf("plugin %q: %w", pc.Name, err)
		}
		if _, dup := set.plugins[pc.Name]; dup {
			p.release()
			set.release()
			return nil, fmt.Errorf("plugin %q: defined twice", pc.Name)
		}
		set.plugins[pc.Name] = p
	}
	return set, nil
}

func (m *Manager) preparePlugin(ctx context.Context, pc *config.Plugin) (*plugin, error) {
	code, sum, err := m.load(pc)
	if err != nil {
		return nil, err
	}
	key, err := identity(pc, sum)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, errors.New("manager is closed")
	}
	if p := m.running[key]; p != nil && p.acquire() {
		m.mu.Unlock()
		return p, nil
	}
	m.mu.Unlock()

	p, err := m.startPlugin(ctx, pc, code, sum, key)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.running[key] = p
	m.mu.Unlock()
	return p, nil
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
	p := s.plugins[ref.Plugin]
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
	return &factory{m: s.m, p: p, att: att, route: routeName}, nil
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
		for _, p := range s.plugins {
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
	m.mu.Unlock()
	if old != nil && old != set {
		old.release()
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
	running := make([]*plugin, 0, len(m.running))
	for _, p := range m.running {
		running = append(running, p)
	}
	m.mu.Unlock()
	if active != nil {
		active.release()
	}
	for _, p := range running {
		p.shutdown()
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

// successor returns the factory that replaces f after f's plugin closed: the
// same attachment on the plugin of that name in the active set.
func (m *Manager) successor(f *factory) *factory {
	m.mu.Lock()
	set := m.active
	m.mu.Unlock()
	if set == nil {
		return nil
	}
	p := set.plugins[f.p.cfg.Name]
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
	return &factory{m: m, p: p, att: att, route: f.route}
}

// startTimeout bounds the start of one instance: _initialize, and the
// creation, start and configuration of its root contexts.
func startTimeout(call time.Duration) time.Duration {
	return max(20*call, 10*time.Second)
}
