package filter

import (
	"sync"

	"github.com/wasmgate/wasmgate/config"
)

// Network filters act on the bytes of a TCP connection that a listener
// with tcp_proxy carries to a cluster, as Envoy's network (L4) filters
// do. The proxy calls a connection's filters from one goroutine at a
// time, never concurrently.

// NetworkPlugins is implemented by a PluginSet whose plugins can also be
// network filters.
type NetworkPlugins interface {
	// NetworkFactory returns the network filter of one attachment on a
	// TCP listener.
	NetworkFactory(ref config.FilterRef, listener string) (NetworkFactory, error)
}

// NetworkFactory makes a network filter's state for each connection.
type NetworkFactory interface {
	// Name identifies the filter in logs and metrics.
	Name() string
	// NewConnection returns the filter's state for the connection c. An
	// error closes the connection, unless ErrFailOpen is wrapped in it:
	// then the connection goes on without the filter.
	NewConnection(c *NetConn) (NetworkStream, error)
}

// PeerType says which end closed a connection (proxy-wasm's PeerType).
type PeerType uint32

const (
	// PeerUnknown: the proxy does not know, or the stream ended first.
	PeerUnknown PeerType = 0
	// PeerLocal: the proxy closed it.
	PeerLocal PeerType = 1
	// PeerRemote: the other end closed it.
	PeerRemote PeerType = 2
)

// NetworkStream is a network filter's state for one connection.
type NetworkStream interface {
	// OnNewConnection is called once the client's connection is accepted
	// (and its TLS handshake done). Pause holds the connection: no
	// upstream connection is made and no byte moves until the filter
	// resumes it (NetConn.ResumeDownstream) or closes it.
	OnNewConnection() Status
	// OnDownstreamData sees the client's bytes not yet sent upstream:
	// data holds them, and the filter may change data.B. Continue passes
	// them on; Pause keeps them, and the next read appends to them and
	// calls the filters again. endOfStream is set once the client has
	// closed its side.
	OnDownstreamData(data *Body, endOfStream bool) Status
	// OnUpstreamData is the same for the upstream's bytes on their way to
	// the client.
	OnUpstreamData(data *Body, endOfStream bool) Status
	// OnDownstreamClose is called when the client's connection closes.
	OnDownstreamClose(peer PeerType)
	// OnUpstreamClose is called when the upstream's side ends.
	OnUpstreamClose(peer PeerType)
	// Done releases the state, after the connection has closed. It is
	// always called, exactly once.
	Done()
}

// NetConn is one connection of a TCP listener, as its network filters
// see it.
type NetConn struct {
	// X describes the connection: Conn, Listener, Cluster, UpstreamAddr
	// (once connected), Node, Upstreams and FilterState are set; Ctx is
	// nil, as there is no HTTP request.
	X *Exchange
	// Control acts on the connection from any goroutine.
	Control NetControl
	// Data, when set, guards the connection's bytes: the proxy holds it
	// while it changes them, and a filter that reads or changes bytes it
	// holds outside its data callbacks (as Envoy lets a Wasm filter, from
	// a timer) holds it meanwhile. The proxy never holds it while it
	// calls a filter.
	Data sync.Locker
}

// NetControl is what a network filter may do to its connection.
type NetControl interface {
	// ResumeDownstream goes on after a filter paused the connection or
	// the client's bytes: the filters after it are called with the bytes
	// held (Envoy's continueReading).
	ResumeDownstream()
	// Close closes both sides, after what was already passed on is
	// written.
	Close()
}
