package wasm

import (
	"fmt"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// A plugin on a TCP listener is a network filter: each connection gets a
// context in an instance of the plugin, and the guest is called as Envoy
// calls a network filter's (proxy_on_new_connection, then
// proxy_on_downstream_data and proxy_on_upstream_data with the bytes of
// each direction in the buffers DownstreamData and UpstreamData, then
// proxy_on_downstream_connection_close and
// proxy_on_upstream_connection_close, and proxy_on_done, proxy_on_log and
// proxy_on_delete once the connection is gone). A context is the same
// stream as an HTTP request's, with no request: header maps and the
// request and response properties are NOT_FOUND in it, the connection's
// properties are served.

var _ filter.NetworkPlugins = (*Set)(nil)

// NetworkFactory implements filter.NetworkPlugins.
func (s *Set) NetworkFactory(ref config.FilterRef, listener string) (filter.NetworkFactory, error) {
	f, err := s.Factory(ref, "")
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", listener, err)
	}
	return netFactory{f.(*factory)}, nil
}

// netFactory is one attachment of a plugin on a TCP listener.
type netFactory struct{ f *factory }

func (n netFactory) Name() string { return n.f.Name() }

// NewConnection implements filter.NetworkFactory.
func (n netFactory) NewConnection(c *filter.NetConn) (filter.NetworkStream, error) {
	s, err := n.f.open(c.X, c)
	if s == nil {
		return nil, err
	}
	return netStream{s}, nil
}

// netStream is a connection's context: a filter.NetworkStream.
type netStream struct{ s *stream }

var _ filter.NetworkStream = netStream{}

// OnNewConnection implements filter.NetworkStream.
func (n netStream) OnNewConnection() filter.Status {
	s := n.s
	return s.callback(cbNetwork, func(in *instance) (uint64, error) {
		return in.invoke(in.fn.newConnection, uint64(s.id))
	}, filter.Pause)
}

// OnDownstreamData implements filter.NetworkStream.
func (n netStream) OnDownstreamData(data *filter.Body, endOfStream bool) filter.Status {
	return n.data(abi.BufferDownstreamData, data, endOfStream)
}

// OnUpstreamData implements filter.NetworkStream. As in Envoy, the end of
// the upstream's bytes is also proxy_on_upstream_connection_close, of an
// unknown peer.
func (n netStream) OnUpstreamData(data *filter.Body, endOfStream bool) filter.Status {
	st := n.data(abi.BufferUpstreamData, data, endOfStream)
	if endOfStream {
		n.OnUpstreamClose(filter.PeerUnknown)
	}
	return st
}

func (n netStream) data(t abi.BufferType, data *filter.Body, endOfStream bool) filter.Status {
	s := n.s
	return s.callback(cbNetwork, func(in *instance) (uint64, error) {
		fn := in.fn.downstreamData
		if t == abi.BufferUpstreamData {
			fn = in.fn.upstreamData
		}
		s.body, s.bodyType = data, t
		r, err := in.invoke(fn, uint64(s.id), uint64(len(data.B)), eos(endOfStream))
		s.body = nil
		// Bytes the guest holds stay in its reach, as Envoy keeps them,
		// until a data callback of their direction lets them go.
		s.held[netDirection(t)] = nil
		if err == nil && uint32(r) != 0 {
			s.held[netDirection(t)] = data
		}
		return r, err
	}, filter.Pause)
}

// OnDownstreamClose implements filter.NetworkStream.
func (n netStream) OnDownstreamClose(peer filter.PeerType) { n.closed(false, peer) }

// OnUpstreamClose implements filter.NetworkStream.
func (n netStream) OnUpstreamClose(peer filter.PeerType) { n.closed(true, peer) }

// closed calls proxy_on_downstream_connection_close, or the upstream's.
func (n netStream) closed(upstream bool, peer filter.PeerType) {
	s := n.s
	s.callback(cbNetwork, func(in *instance) (uint64, error) {
		fn := in.fn.downstreamClose
		if upstream {
			fn = in.fn.upstreamClose
		}
		_, err := in.invoke(fn, uint64(s.id), uint64(peer))
		return 0, err
	}, filter.Pause)
}

// Done implements filter.NetworkStream: proxy_on_done, proxy_on_log and
// proxy_on_delete, then the instance is unpinned.
func (n netStream) Done() { n.s.Done(n.s.x) }
