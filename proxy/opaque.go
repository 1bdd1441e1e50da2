package proxy

import (
	"context"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
)

// OpaqueOptions describe a connection that a caller of the proxy (the
// mesh's TCP relay) accepted and connects itself, and that passes through
// network filters of the proxy's live configuration on its way, as a TCP
// listener's connection does.
type OpaqueOptions struct {
	// Listener and Cluster name the connection to the filters (the
	// listener_name and cluster_name properties) and in logs.
	Listener, Cluster string
	// Filters are plugins of the live configuration, in order. One the
	// configuration no longer has (it changed meanwhile) is left out.
	Filters []config.FilterRef
	// Dial connects the upstream once every filter let the connection
	// through: the connection and its address (upstream.address). It
	// must give up when ctx is cancelled.
	Dial func(ctx context.Context) (net.Conn, string, error)
	// TLS describes the downstream's handshake (nil: plain text).
	TLS *filter.TLSInfo
	// Stats count the bytes each way; nil counts them under Listener and
	// Cluster in the proxy's metrics. Connections are the caller's to
	// count.
	Stats *metrics.TCPStats
	// Idle closes the connection when neither side sent anything for
	// this long; zero means DefaultTCPIdleTimeout.
	Idle time.Duration
}

// OpaqueResult is how a connection of ServeOpaque went.
type OpaqueResult struct {
	// Received counts the bytes read from the downstream, Sent those
	// written to it.
	Received, Sent int64
	// Reason says why the connection ended before both sides ended their
	// bytes: filter_failed, filter_closed, idle_timeout,
	// upstream_connect_failure, downstream_reset, upstream_reset,
	// downstream_write_failed, upstream_write_failed; "" when both did.
	Reason string
	// Connected reports whether the upstream was reached.
	Connected bool
}

// ServeOpaque carries the bytes of down to the upstream o.Dial connects,
// and back, through the network filters o.Filters, as a TCP listener with
// tcp_proxy and those filters would, until both sides ended, a filter
// closed the connection, or it went idle. It closes down and the upstream
// before it returns. Without filters it still works, but a caller that
// has none does better to copy the bytes itself.
func (s *Server) ServeOpaque(down net.Conn, o OpaqueOptions) OpaqueResult {
	defer down.Close()
	snap := s.acquire()
	if snap == nil {
		return OpaqueResult{Reason: "local_close"}
	}
	stats := o.Stats
	if stats == nil {
		stats = s.metrics.TCP(o.Listener, o.Cluster)
	}
	tl := &tcpListener{stats: stats, name: o.Cluster, idle: o.Idle, dial: o.Dial, noLog: true}
	if tl.idle <= 0 {
		tl.idle = DefaultTCPIdleTimeout
	}
	t := s.newTCPConn(snap, down, tl, o.Listener, o.TLS)
	if np, ok := snap.plugins.(filter.NetworkPlugins); ok {
		for _, ref := range o.Filters {
			f, err := np.NetworkFactory(ref, o.Listener)
			if err != nil {
				t.log.Debug("network filter left out: not in the live configuration", zap.String("plugin", ref.Plugin), zap.Error(err))
				continue
			}
			tl.filters = append(tl.filters, f)
		}
	}
	t.serve(snap)
	return OpaqueResult{Received: t.ds.received, Sent: t.us.sent, Reason: t.why, Connected: t.up != nil}
}
