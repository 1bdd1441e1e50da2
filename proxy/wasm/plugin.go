package wasm

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
)

// Defaults of config.Plugin's zero values.
const (
	defaultMemoryLimitMB = 256
	defaultCallTimeout   = time.Second
	defaultMaxBodyBytes  = 1 << 20
)

// plugin is one plugin configuration, running in a VM: its root contexts
// there, its failure policy, its logs and metrics. Sets and requests
// hold references; the last release deletes its root contexts and drops
// its reference to the VM.
type plugin struct {
	m      *Manager
	vm     *vm
	cfg    config.Plugin
	key    string
	sha256 string
	log    *zap.Logger

	maxBody int
	allowed []string
	// tags name the metrics the plugin defines (stats_tags).
	tags *tagger

	// refs counts the sets and the requests that use the plugin; at zero
	// it closes, and it cannot be acquired again.
	refs atomic.Int64

	// attachments are the plugin's root context configurations: its own
	// (the first) and the per-route overrides. Changed under vm.mu.
	attachments atomic.Pointer[[]*attachment]
	closed      bool          // guarded by vm.mu
	done        chan struct{} // closed once the plugin closed
	closeOnce   sync.Once
}

// attachment is one root context configuration of a plugin: the
// plugin's own or a per-route override. Every live instance of the
// plugin's VM has a root context for it.
type attachment struct {
	p      *plugin
	index  int // in the VM: the slot of instance.roots that holds its id
	config []byte
	// needs is the set of stream callbacks its root context declared it
	// needs (wasmgate_callbacks), with callbacksDeclared; 0 until then:
	// every callback.
	needs atomic.Uint32
}

// startPlugin starts a plugin: in the VM its settings name (started now
// when none runs), a root context in every instance.
func (m *Manager) startPlugin(ctx context.Context, pc *config.Plugin, code []byte, sum, key string) (*plugin, error) {
	v, err := m.vmFor(ctx, pc, code, sum)
	if err != nil {
		return nil, err
	}
	maxBody := int(pc.MaxBodyBytes)
	if maxBody == 0 {
		maxBody = defaultMaxBodyBytes
	}
	p := &plugin{
		m:       m,
		vm:      v,
		cfg:     *pc,
		key:     key,
		sha256:  sum,
		log:     m.log.With(zap.String("plugin", pc.Name)),
		maxBody: maxBody,
		allowed: append([]string(nil), pc.AllowedClusters...),
		tags:    newTagger(pc.StatsTags),
		done:    make(chan struct{}),
	}
	p.refs.Store(1)
	v.mu.Lock()
	a, err := v.addRoot(p, pc.Config)
	if err == nil {
		p.attachments.Store(&[]*attachment{a})
	}
	v.mu.Unlock()
	if err != nil {
		v.release()
		return nil, err
	}
	p.log.Debug("wasm plugin started", zap.String("vm", v.name), zap.String("root_id", pc.RootID))
	return p, nil
}

func (p *plugin) defaultAttachment() *attachment { return (*p.attachments.Load())[0] }

// attach returns the attachment configured with cfg, creating its root
// context in every live instance when it is new.
func (p *plugin) attach(cfg []byte) (*attachment, error) {
	v := p.vm
	v.mu.Lock()
	defer v.mu.Unlock()
	if p.closed {
		return nil, errPluginClosed
	}
	atts := *p.attachments.Load()
	for _, a := range atts[1:] {
		if bytes.Equal(a.config, cfg) {
			return a, nil
		}
	}
	a, err := v.addRoot(p, cfg)
	if err != nil {
		return nil, err
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

// shutdown deletes the plugin's root contexts from its VM and releases
// the VM, which closes when no other plugin uses it.
func (p *plugin) shutdown() {
	p.closeOnce.Do(func() {
		p.refs.Store(0)
		p.m.forget(p)
		v := p.vm
		v.mu.Lock()
		p.closed = true
		v.dropRoots(*p.attachments.Load())
		v.mu.Unlock()
		p.log.Debug("wasm plugin closed")
		v.release()
		returnMemory()
		close(p.done)
	})
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
