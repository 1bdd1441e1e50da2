package filter

import (
	"context"

	"github.com/wasmgate/wasmgate/config"
)

// Plugins builds the Wasm filters of a configuration. The proxy calls
// Prepare while it builds a snapshot, then the set's Activate once the
// snapshot is live, or its Discard when the configuration was rejected
// after all.
type Plugins interface {
	// Prepare loads the plugins of a configuration. up reaches the
	// clusters of the live snapshot, for the calls that filters make
	// outside any one request (ticks, root contexts); the proxy gives the
	// same value at every Prepare.
	Prepare(ctx context.Context, plugins []config.Plugin, up Upstreams) (PluginSet, error)
}

// PluginSet is the plugins of one configuration.
type PluginSet interface {
	// Factory returns the filter of one attachment on a route.
	Factory(ref config.FilterRef, route string) (Factory, error)
	// Activate makes the set the live one; plugins of the previous set that
	// it does not use stop.
	Activate()
	// Discard releases a set that never went live.
	Discard()
}

// HeadersOnly is implemented by factories whose streams act on headers
// only: their body and trailer callbacks return Continue and change
// nothing. The proxy neither buffers nor re-chunks a body for them, and
// does not call their body callbacks.
type HeadersOnly interface {
	Factory
	HeadersOnly()
}
