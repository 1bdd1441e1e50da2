package sdk

import "github.com/wasmgate/wasmgate/sdk/abi"

// NetworkFilter is implemented by a Filter that is also a network (L4)
// filter: attached to a TCP listener (a listener with tcp_proxy in
// wasmgate, a network filter chain before tcp_proxy in Envoy), it sees the
// bytes of each connection rather than HTTP requests. The host calls its
// methods as it calls the HTTP ones: one at a time, on one goroutine.
// A Filter that does not implement it passes every byte on.
type NetworkFilter interface {
	// OnNewConnection is called once a client's connection is accepted.
	// Pause holds it (no upstream connection, no byte moves) until
	// c.Resume.
	OnNewConnection(c *Conn) Action
	// OnDownstreamData sees the client's bytes not yet passed on
	// (c.Downstream). Continue passes them upstream; Pause holds them:
	// the next bytes are appended and the filter called again, or
	// c.Resume lets them go. endOfStream: the client has ended its side.
	OnDownstreamData(c *Conn, endOfStream bool) Action
	// OnUpstreamData is the same for the upstream's bytes on their way to
	// the client (c.Upstream); a held direction here goes on only when
	// more bytes come.
	OnUpstreamData(c *Conn, endOfStream bool) Action
	// OnConnectionClose is called when the connection has closed; peer
	// says who closed the client's side. c's state may still be read.
	OnConnectionClose(c *Conn, peer Peer)
}

// Peer says which end closed a connection.
type Peer uint32

const (
	PeerUnknown = Peer(abi.PeerUnknown)
	PeerLocal   = Peer(abi.PeerLocal)  // the proxy closed it
	PeerRemote  = Peer(abi.PeerRemote) // the client did
)

// Conn is one connection as a NetworkFilter sees it. It is valid until
// OnConnectionClose returns; the SDK reuses it after. Properties of the
// connection (source.address, upstream.address, connection.mtls, ...)
// are read with Property and its kin in its callbacks.
type Conn struct {
	r *Request
}

// ID returns the host's id of the connection's context.
func (c *Conn) ID() uint32 { return c.r.id }

// State returns what SetState stored, or nil.
func (c *Conn) State() any { return c.r.data }

// SetState keeps per-connection state for the filter's later callbacks.
func (c *Conn) SetState(v any) { c.r.data = v }

// Downstream returns the client's bytes of the current OnDownstreamData.
func (c *Conn) Downstream() ([]byte, error) { return body(abi.BufferDownstreamData, c.r.bodySize) }

// SetDownstream replaces the client's bytes of the current
// OnDownstreamData: what goes upstream when the filter continues.
func (c *Conn) SetDownstream(b []byte) error {
	return check("proxy_set_buffer_bytes", hostSetBuffer(abi.BufferDownstreamData, 0, maxSize, b))
}

// Upstream returns the upstream's bytes of the current OnUpstreamData.
func (c *Conn) Upstream() ([]byte, error) { return body(abi.BufferUpstreamData, c.r.bodySize) }

// SetUpstream replaces the upstream's bytes of the current
// OnUpstreamData: what goes to the client when the filter continues.
func (c *Conn) SetUpstream(b []byte) error {
	return check("proxy_set_buffer_bytes", hostSetBuffer(abi.BufferUpstreamData, 0, maxSize, b))
}

// Resume lets a connection, or client bytes, held by the filter go on.
// It acts on the connection of the callback it is called in, the
// callback of an HTTP call made in one of its callbacks included.
func (c *Conn) Resume() error {
	return check("proxy_continue_stream", hostContinueStream(abi.StreamDownstream))
}

// Close closes the connection, both sides.
func (c *Conn) Close() error {
	return check("proxy_close_stream", hostCloseStream(abi.StreamDownstream))
}

// conn returns the connection of context id with its network filter,
// entering its context; nil when the context is unknown or its filter is
// not a NetworkFilter. Either way the context is marked as a connection,
// so that OnLog is not called for it.
func conn(id uint32) (*Request, NetworkFilter) {
	r := streams.get(id)
	if r == nil || r.root.filter == nil {
		return nil, nil
	}
	r.isConn = true
	nf, ok := r.root.filter.(NetworkFilter)
	if !ok {
		return nil, nil
	}
	enterStream(r)
	return r, nf
}

func onNewConnection(id uint32) Action {
	r, nf := conn(id)
	if r == nil {
		return Continue
	}
	a := nf.OnNewConnection(&r.conn)
	leave()
	return a
}

func onConnData(id, size uint32, eos, up bool) Action {
	r, nf := conn(id)
	if r == nil {
		return Continue
	}
	r.endOfStream, r.bodySize = eos, size
	var a Action
	if up {
		a = nf.OnUpstreamData(&r.conn, eos)
	} else {
		a = nf.OnDownstreamData(&r.conn, eos)
	}
	r.bodySize = 0
	leave()
	return a
}

func onDownstreamClose(id, peer uint32) {
	r, nf := conn(id)
	if r == nil {
		return
	}
	nf.OnConnectionClose(&r.conn, Peer(peer))
	leave()
}
