package wasm

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// Host is a Manager as the proxy runs it: the proxy's filter.Plugins. The
// proxy hands it its upstreams with every Prepare, so that the proxy and
// the host are built in either order and neither needs the other first.
type Host struct {
	m  *Manager
	up liveUpstreams
}

var (
	_ filter.Plugins   = (*Host)(nil)
	_ filter.PluginSet = (*Set)(nil)
)

// NewHost returns a host with no plugins. proxy_http_call reaches the
// upstreams that the proxy gives to Prepare; opts.Upstreams, when set,
// serves until then.
func NewHost(opts Options) (*Host, error) {
	h := &Host{}
	if opts.Upstreams != nil {
		h.up.set(opts.Upstreams)
	}
	opts.Upstreams = &h.up
	m, err := NewManager(opts)
	if err != nil {
		return nil, err
	}
	h.m = m
	return h, nil
}

// Manager returns the host's manager.
func (h *Host) Manager() *Manager { return h.m }

// Close stops every plugin.
func (h *Host) Close() error { return h.m.Close() }

// Prepare implements filter.Plugins.
func (h *Host) Prepare(ctx context.Context, plugins []config.Plugin, up filter.Upstreams) (filter.PluginSet, error) {
	if up != nil {
		h.up.set(up)
	}
	set, err := h.m.Prepare(ctx, plugins)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return set, nil
}

// Activate makes the set the live one (Manager.Activate).
func (s *Set) Activate() { s.m.Activate(s) }

// Discard releases a set that never went live.
func (s *Set) Discard() { s.Close() }

// liveUpstreams is the upstreams the proxy last gave.
type liveUpstreams struct {
	p atomic.Pointer[filter.Upstreams]
}

func (u *liveUpstreams) set(up filter.Upstreams) { u.p.Store(&up) }

// StreamCluster implements filter.StreamUpstreams when the proxy's
// upstreams do.
func (u *liveUpstreams) StreamCluster(name string) (filter.StreamCluster, error) {
	p := u.p.Load()
	if p == nil {
		return nil, fmt.Errorf("%w %q: the proxy has no configuration yet", filter.ErrUnknownCluster, name)
	}
	su, ok := (*p).(filter.StreamUpstreams)
	if !ok {
		return nil, errNoStreams
	}
	return su.StreamCluster(name)
}

func (u *liveUpstreams) Call(cluster string, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	p := u.p.Load()
	if p == nil {
		return fmt.Errorf("%w %q: the proxy has no configuration yet", filter.ErrUnknownCluster, cluster)
	}
	return (*p).Call(cluster, req, resp, timeout)
}
