package wasm

import (
	"context"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
)

// Plugins adapts a Manager to the proxy's Plugins interface: the proxy
// prepares a Set while building a snapshot, then activates it once the
// snapshot is live or discards it when the configuration is rejected.
func Plugins(m *Manager) proxy.Plugins { return proxyPlugins{m} }

type proxyPlugins struct{ m *Manager }

var _ proxy.PluginSet = (*Set)(nil)

func (p proxyPlugins) Prepare(ctx context.Context, plugins []config.Plugin) (proxy.PluginSet, error) {
	set, err := p.m.Prepare(ctx, plugins)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return set, nil
}

func (p proxyPlugins) Activate(set proxy.PluginSet) { p.m.Activate(set.(*Set)) }
func (p proxyPlugins) Discard(set proxy.PluginSet)  { set.(*Set).Close() }
