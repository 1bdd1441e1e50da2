// Package relay carries the opaque TCP of the mesh's `protocol: tcp`
// services between sidecars: bytes, never parsed, inside mutual TLS with
// the sidecars' SVIDs, and the destination's authorization policy decided
// once per connection with the caller's identity from the handshake.
//
//	app --plain--> Outbound: a local port per TCP service (explicit), or an
//	               intercepted connection found by its original destination
//	               -> an endpoint of the service from the registry (least
//	                  connections, another endpoint when one cannot be reached)
//	               -> mTLS with the caller's SVID, ALPN "wasmgate-tcp",
//	                  the service's SPIFFE IDs required of the peer
//	Inbound:       mTLS terminated with the service's SVID (strict), or plain
//	               text accepted too (permissive)
//	               -> the service's policy.Guard decides on the peer's identity
//	               -> denied: the connection closes; allowed: bytes to the app
//	                  on 127.0.0.1:APP_PORT
//
// An intercepted connection bound for a host outside the mesh that does
// not speak HTTP (Intercept tells by its first bytes) is closed under
// registry_only, or relayed in plain TCP to its original destination
// under allow_any (Outside).
//
// A side with network filters (SetFilters: Wasm plugins of the sidecar's
// proxy) carries its connections through them with the proxy's TCP driver
// (proxy.Server.ServeOpaque) instead of copying the bytes itself.
//
// Every connection makes a flow record and every decision a decision
// record, when the proxy's telemetry has sinks for them.
package relay

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// ALPN is the application protocol both ends of an opaque TCP hop name in
// their handshake. An HTTP cluster offers h2 or http/1.1 and is refused
// by a TCP inbound, and the other way round, so that bytes of one kind
// never reach an app of the other.
const ALPN = "wasmgate-tcp"

// Defaults.
const (
	// DefaultConnectTimeout bounds a dial and its handshake.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultIdleTimeout closes a relayed connection on which neither side
	// sent anything for this long.
	DefaultIdleTimeout = time.Hour
)

// The close reasons of flow records.
const (
	reasonPeerClosed = "peer_closed"
	reasonDenied     = "policy_denied"
	reasonUpstream   = "upstream_unreachable"
	reasonTimeout    = "timeout"
	reasonError      = "error"
	reasonShutdown   = "local_close"
	// reasonOutside: a connection to a host outside the mesh, refused
	// by outbound_policy registry_only.
	reasonOutside = "outside_mesh"
	// A network filter closed the connection, or failed (and its plugin
	// fails closed).
	reasonFilterClosed = "filter_closed"
	reasonFilterFailed = "filter_failed"
)

// Filters are the network filters, Wasm plugins of the sidecar's proxy,
// that the connections of one side of the relay pass through, as a TCP
// listener's connections do (proxy.Server.ServeOpaque): on the outbound,
// before the connection to the service is made; on the inbound, after the
// policy admitted the peer and before the app is dialled.
type Filters struct {
	Proxy *proxy.Server
	// Plugins are plugins of the proxy's configuration, in order.
	Plugins []config.FilterRef
}

// on reports whether f has filters to run.
func (f *Filters) on() bool { return f != nil && f.Proxy != nil && len(f.Plugins) > 0 }

// serve carries down's bytes through the filters to what dial connects,
// as pipe does without them, and returns the flow's byte counts and why
// it ended.
func (f *Filters) serve(down net.Conn, o proxy.OpaqueOptions, st tcpStats) (*counts, string) {
	o.Filters, o.Stats = f.Plugins, st.s
	r := f.Proxy.ServeOpaque(down, o)
	n := &counts{}
	n.in.Store(r.Received)
	n.out.Store(r.Sent)
	switch r.Reason {
	case "":
		return n, reasonPeerClosed
	case "filter_closed":
		return n, reasonFilterClosed
	case "filter_failed":
		return n, reasonFilterFailed
	case "idle_timeout":
		return n, reasonTimeout
	case "upstream_connect_failure":
		return n, reasonUpstream
	case "local_close":
		return n, reasonShutdown
	}
	return n, reasonError
}

// counts are the bytes of one relayed connection, and the listener's
// byte counters they go to as well (nil: none).
type counts struct {
	in, out       atomic.Int64 // from the downstream, to the downstream
	inTot, outTot prometheus.Counter
}

// The listener labels of the relay's wasmgate_tcp_* series, and the
// cluster labels of connections that go to no service: passed on outside
// the mesh, refused as outside it, or to the local app.
const (
	listenerOutbound = "mesh-tcp-outbound"
	listenerInbound  = "mesh-tcp-inbound"
	clusterPass      = "passthrough"
	clusterBlackhole = "blackhole"
	clusterApp       = "app"
)

// meter counts a relay's connections in the proxy's metrics
// (wasmgate_tcp_connections_total, wasmgate_tcp_active_connections,
// wasmgate_tcp_received_bytes_total, wasmgate_upstream_errors_total), by
// listener and cluster; with no metrics set it counts nothing.
type meter struct {
	m atomic.Pointer[metrics.Metrics]
}

// tcpStats are one listener's and cluster's series, or none.
type tcpStats struct{ s *metrics.TCPStats }

func (m *meter) stats(listener, cluster string) tcpStats {
	if mm := m.m.Load(); mm != nil {
		return tcpStats{mm.TCP(listener, cluster)}
	}
	return tcpStats{}
}

// open counts a connection accepted and open; done counts it closed.
func (t tcpStats) open() (done func()) {
	if t.s == nil {
		return func() {}
	}
	t.s.Connections.Inc()
	t.s.Active.Inc()
	return t.s.Active.Dec
}

func (t tcpStats) connectFailed() {
	if t.s != nil {
		t.s.ConnectFailures.Inc()
	}
}

// counts returns a connection's byte counts, which also go to the
// listener's byte counters.
func (t tcpStats) counts() *counts {
	c := &counts{}
	if t.s != nil {
		c.inTot, c.outTot = t.s.BytesDown, t.s.BytesUp
	}
	return c
}

// pipe copies bytes both ways between down and up until both directions
// ended, passing a half close on (a client that ends its request with
// shutdown(SHUT_WR) still gets the answer), or until neither side sent
// anything for idle. It returns why it ended.
func pipe(down, up net.Conn, n *counts, idle time.Duration) string {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var reason atomic.Pointer[string]
	note := func(r string) { reason.CompareAndSwap(nil, &r) }
	copyOne := func(dst, src net.Conn, count *atomic.Int64, total prometheus.Counter) {
		buf := make([]byte, 32<<10)
		for {
			_ = src.SetReadDeadline(time.Now().Add(idle))
			k, err := src.Read(buf)
			if k > 0 {
				last.Store(time.Now().UnixNano())
				count.Add(int64(k))
				if total != nil {
					total.Add(float64(k))
				}
				if _, werr := dst.Write(buf[:k]); werr != nil {
					note(reasonError)
					_ = src.Close()
					return
				}
			}
			if err == nil {
				continue
			}
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				if time.Since(time.Unix(0, last.Load())) < idle {
					continue
				}
				note(reasonTimeout)
				_ = dst.Close()
				_ = src.Close()
				return
			case errors.Is(err, io.EOF):
				note(reasonPeerClosed)
				closeWrite(dst)
				return
			default:
				if !errors.Is(err, net.ErrClosed) {
					note(reasonError)
				}
				_ = dst.Close()
				return
			}
		}
	}
	done := make(chan struct{})
	go func() {
		copyOne(down, up, &n.out, n.outTot)
		close(done)
	}()
	copyOne(up, down, &n.in, n.inTot)
	<-done
	_ = down.Close()
	_ = up.Close()
	if r := reason.Load(); r != nil {
		return *r
	}
	return reasonShutdown
}

// closeWrite ends the writing half of c, or all of it when it has no
// half close.
func closeWrite(c net.Conn) {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		if hc.CloseWrite() == nil {
			return
		}
	}
	_ = c.Close()
}

// flow is what a flow record says about one relayed connection.
type flow struct {
	listener            string
	start               time.Time
	source, destination string
	sourceID, destID    string
	tlsVersion, cipher  string
	n                   *counts
	reason              string
}

func (f *flow) emit(p *telemetry.Pipeline) {
	if !p.Enabled(telemetry.KindFlow) {
		return
	}
	r := p.Acquire(telemetry.KindFlow)
	fl := &r.Flow
	r.Time = f.start
	fl.Listener = f.listener
	fl.SourceAddr = append(fl.SourceAddr, f.source...)
	fl.DestinationAddr = append(fl.DestinationAddr, f.destination...)
	fl.SourceIdentity = append(fl.SourceIdentity, f.sourceID...)
	fl.DestinationIdentity = append(fl.DestinationIdentity, f.destID...)
	if f.n != nil {
		fl.BytesIn, fl.BytesOut = f.n.in.Load(), f.n.out.Load()
	}
	fl.Duration = time.Since(f.start)
	fl.TLSVersion, fl.TLSCipher = f.tlsVersion, f.cipher
	fl.CloseReason = f.reason
	p.Emit(r)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
