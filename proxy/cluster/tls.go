package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// clientTLS returns the TLS configuration for an endpoint of cfg spoken to
// in protocol, or nil for a cleartext cluster. mesh is the proxy's
// workload identity, for a cluster with `tls: {mesh: true}`.
func clientTLS(cfg config.Cluster, addr, protocol string, mesh tlsconf.Mesh) (*tls.Config, error) {
	if cfg.TLS == nil {
		return nil, nil
	}
	conf, err := tlsconf.ClientConfig(cfg.TLS, addr, protocol, tlsconf.WithMesh(mesh))
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cfg.Name, err)
	}
	return conf, nil
}

// SetMesh gives the clusters built from now on the proxy's workload
// identity. Call it before the first Build.
func (ps *Pools) SetMesh(m tlsconf.Mesh) {
	ps.mu.Lock()
	ps.mesh = m
	ps.mu.Unlock()
}

// tlsKey identifies the TLS settings of a pool, so that a pool is shared
// only by endpoints that reach their address alike.
func tlsKey(t *config.ClusterTLS) string {
	if t == nil {
		return ""
	}
	return fmt.Sprintf("%#v", *t)
}

// TLS reports whether the endpoint is reached over TLS.
func (e *Endpoint) TLS() bool { return e.pool.tls != nil }

// HTTP2 reports whether the endpoint speaks HTTP/2 to requests that came
// in on HTTP/1.1 (a downstream cluster speaks it to the others).
func (e *Endpoint) HTTP2() bool { return e.pool.h2 != nil }

// Dial opens a connection of its own to the endpoint, over TLS when the
// cluster says so (offering only http/1.1), for a request that takes the
// connection over, as a WebSocket does.
func (e *Endpoint) Dial(ctx context.Context) (net.Conn, error) {
	return e.dial(ctx, []string{"http/1.1"})
}

// DialOpaque opens a connection of its own to the endpoint for opaque
// bytes (a TCP listener's), over TLS when the cluster says so, offering
// no application protocol.
func (e *Endpoint) DialOpaque(ctx context.Context) (net.Conn, error) {
	return e.dial(ctx, nil)
}

func (e *Endpoint) dial(ctx context.Context, alpn []string) (net.Conn, error) {
	d := net.Dialer{Timeout: e.pool.key.connectTimeout}
	c, err := d.DialContext(ctx, "tcp", e.Addr)
	if err != nil || e.pool.tls == nil {
		return c, err
	}
	conf := e.pool.tls.Clone()
	conf.NextProtos = alpn
	tc := tls.Client(c, conf)
	hctx, cancel := context.WithTimeout(ctx, e.pool.key.connectTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = c.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: c.RemoteAddr(), Err: err}
	}
	return tc, nil
}

// InsecureClusters names the clusters of cfg that skip verifying their
// endpoints' certificates, for the operator's warning.
func InsecureClusters(cfg *config.Config) []string {
	var names []string
	for _, c := range cfg.Clusters {
		if c.TLS != nil && c.TLS.InsecureSkipVerify {
			names = append(names, c.Name)
		}
	}
	return names
}
