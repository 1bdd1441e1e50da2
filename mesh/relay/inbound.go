package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/conntrack"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// InboundOptions configure an Inbound.
type InboundOptions struct {
	// Mesh is the sidecar's workload identity: the certificate it
	// presents and the roots a peer's certificate must chain to.
	Mesh tlsconf.Mesh
	// Guard is the service's policy, decided once per connection.
	Guard *policy.Guard
	// AppPort is the app's port on 127.0.0.1; it is also the port policies
	// and port-level peer authentications name, as Istio's do.
	AppPort int
	// Mode is the inbound's mode when no peer_authentication of the
	// control plane covers the service; empty means strict.
	Mode policy.Mode
	// Destination names the service in decision records ("db.default").
	Destination string
	// Telemetry receives flow and decision records; nil means none.
	Telemetry *telemetry.Pipeline
	// Metrics count the connections (SetMetrics); nil means not.
	Metrics *metrics.Metrics
	// HandshakeTimeout bounds a peer's handshake (and, when permissive,
	// its first byte); zero means tlsconf.DefaultHandshakeTimeout.
	// ConnectTimeout bounds the dial to the app; zero means
	// DefaultConnectTimeout. IdleTimeout closes a connection silent both
	// ways; zero means DefaultIdleTimeout.
	HandshakeTimeout, ConnectTimeout, IdleTimeout time.Duration
	// Logger may be nil.
	Logger *zap.Logger
}

// Inbound serves the peers of a TCP service: it terminates their mutual
// TLS, decides with the service's policy on the identity they proved, and
// relays an allowed connection's bytes to the app. Create it with
// NewInbound; it is safe for concurrent use.
type Inbound struct {
	o    InboundOptions
	tls  *tls.Config
	app  string
	self string // the sidecar's SPIFFE ID, for flow records
	log  *zap.Logger
	cs   conntrack.Set
	tel  atomic.Pointer[telemetry.Pipeline]
	met  meter
	// srv describes a peer's handshake to network filters; filters are
	// those of the connections the policy admitted (SetFilters).
	srv     *tlsconf.Server
	filters atomic.Pointer[Filters]
}

// NewInbound checks the options and prepares the TLS side.
func NewInbound(o InboundOptions) (*Inbound, error) {
	if o.Mesh == nil || o.Guard == nil {
		return nil, errors.New("relay: an inbound needs Mesh and Guard")
	}
	if o.AppPort < 1 || o.AppPort > 65535 {
		return nil, fmt.Errorf("relay: app port %d is not a port", o.AppPort)
	}
	srv, err := tlsconf.NewServer(config.ListenerTLS{Mesh: true}, []string{ALPN}, nil, tlsconf.WithMesh(o.Mesh))
	if err != nil {
		return nil, fmt.Errorf("relay: inbound TLS: %w", err)
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = tlsconf.DefaultHandshakeTimeout
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Mode == "" {
		o.Mode = policy.Strict
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	in := &Inbound{o: o, tls: srv.Config(), srv: srv, app: net.JoinHostPort("127.0.0.1", strconv.Itoa(o.AppPort)), log: o.Logger}
	if cert, err := o.Mesh.Certificate(); err == nil && cert.Leaf != nil && len(cert.Leaf.URIs) > 0 {
		in.self = cert.Leaf.URIs[0].String()
	}
	in.tel.Store(o.Telemetry)
	in.met.m.Store(o.Metrics)
	return in, nil
}

// SetTelemetry replaces InboundOptions.Telemetry, for connections from
// now on.
func (in *Inbound) SetTelemetry(p *telemetry.Pipeline) { in.tel.Store(p) }

// SetMetrics has connections from now on counted in m (listener
// mesh-tcp-inbound, cluster app).
func (in *Inbound) SetMetrics(m *metrics.Metrics) { in.met.m.Store(m) }

// SetFilters has the connections the policy admits from now on pass
// through f's network filters on their way to the app; nil, or no
// plugins, through none.
func (in *Inbound) SetFilters(f *Filters) { in.filters.Store(f) }

// Serve accepts peers on ln until it is closed.
func (in *Inbound) Serve(ln net.Listener) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors, say: wait a little, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			in.log.Warn("accepting a peer", zap.Error(err))
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !in.cs.Add(c) {
			continue
		}
		go func() {
			defer in.cs.Done(c)
			in.serve(c)
		}()
	}
}

// Close ends every connection and waits for them; close the listener
// first.
func (in *Inbound) Close() { in.cs.CloseAll(); in.cs.Wait() }

// mode is the mode in force: the service's peer_authentication, else the
// sidecar's own.
func (in *Inbound) mode() policy.Mode {
	if r := in.o.Guard.Mode(in.o.AppPort); r.Source != "" {
		return r.Mode
	}
	return in.o.Mode
}

func (in *Inbound) serve(raw net.Conn) {
	f := flow{listener: "inbound", start: time.Now(), source: addrString(raw.RemoteAddr()), destination: addrString(raw.LocalAddr()), destID: in.self}
	defer func() { f.emit(in.tel.Load()) }()
	st := in.met.stats(listenerInbound, clusterApp)
	defer st.open()()
	down, principal, ok := in.accept(raw, &f)
	if !ok {
		return
	}
	src, _ := netip.ParseAddrPort(f.source)
	r := policy.Request{Principal: principal, SourceIP: src.Addr().Unmap(), Port: in.o.AppPort, Connection: true}
	d := in.o.Guard.Decide(&r)
	in.record(&f, &d)
	if !d.Allowed {
		in.log.Info("mesh policy: deny", zap.String("source", principal), zap.String("source_ip", f.source),
			zap.String("destination", in.o.Destination), zap.String("policy", d.Policy), zap.Int("rule", d.Rule),
			zap.String("reason", d.Reason.String()), zap.String("protocol", "tcp"))
		f.reason = reasonDenied
		_ = down.Close()
		return
	}
	if d.AuditPolicy != "" {
		in.log.Info("mesh policy: audit", zap.String("source", principal), zap.String("destination", in.o.Destination),
			zap.String("policy", d.AuditPolicy), zap.Int("rule", d.AuditRule), zap.String("protocol", "tcp"))
	}
	var up net.Conn
	defer func() {
		if up != nil {
			in.cs.Done(up)
		}
	}()
	// connect dials the app.
	connect := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, in.o.ConnectTimeout)
		defer cancel()
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", in.app)
		if err != nil {
			st.connectFailed()
			in.log.Warn("the app refused a connection", zap.String("app", in.app), zap.Error(err))
			return err
		}
		if !in.cs.Add(c) {
			return net.ErrClosed
		}
		up = c
		return nil
	}
	if fl := in.filters.Load(); fl.on() {
		var info *filter.TLSInfo
		if tc, ok := down.(*tls.Conn); ok {
			cs := tc.ConnectionState()
			info = in.srv.Identify(&cs).Info
		}
		f.n, f.reason = fl.serve(down, proxy.OpaqueOptions{Listener: listenerInbound, Cluster: clusterApp, TLS: info, Idle: in.o.IdleTimeout,
			Dial: func(ctx context.Context) (net.Conn, string, error) {
				if err := connect(ctx); err != nil {
					return nil, "", err
				}
				return up, in.app, nil
			}}, st)
		return
	}
	if connect(context.Background()) != nil {
		f.reason = reasonUpstream
		_ = down.Close()
		return
	}
	f.n = st.counts()
	f.reason = pipe(down, up, f.n, in.o.IdleTimeout)
}

// accept completes the peer's side: the handshake of a TLS peer, or, when
// permissive, a plain-text peer as it is. It returns the peer's SPIFFE ID
// ("" for plain text).
func (in *Inbound) accept(raw net.Conn, f *flow) (net.Conn, string, bool) {
	c := raw
	if in.mode() == policy.Permissive {
		_ = raw.SetReadDeadline(time.Now().Add(in.o.HandshakeTimeout))
		var first [1]byte
		if _, err := io1(raw, first[:]); err != nil {
			f.reason = reasonTimeout
			_ = raw.Close()
			return nil, "", false
		}
		_ = raw.SetReadDeadline(time.Time{})
		c = &peeked{Conn: raw, first: first[0], has: true}
		if first[0] != tlsHandshakeRecord {
			return c, "", true
		}
	}
	tc := tls.Server(c, in.tls)
	ctx, cancel := context.WithTimeout(context.Background(), in.o.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		in.log.Debug("inbound handshake", zap.String("peer", f.source), zap.Error(err))
		f.reason = reasonError
		_ = raw.Close()
		return nil, "", false
	}
	cs := tc.ConnectionState()
	f.tlsVersion, f.cipher = tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite)
	f.sourceID = tlsconf.PeerSPIFFEID(&cs)
	return tc, f.sourceID, true
}

// record makes the decision a decision record, and a second one for the
// audit rule that matched.
func (in *Inbound) record(f *flow, d *policy.Decision) {
	p := in.tel.Load()
	if !p.Enabled(telemetry.KindDecision) {
		return
	}
	emit := func(v telemetry.Verdict, pol string, rule int, reason string) {
		r := p.Acquire(telemetry.KindDecision)
		o := &r.Decision
		r.Time = time.Now()
		o.Verdict, o.Source, o.Policy, o.Destination = v, "mesh", pol, in.o.Destination
		if rule >= 0 && pol != "" {
			o.Rule = strconv.Itoa(rule)
		}
		o.SourceIdentity = append(o.SourceIdentity, f.sourceID...)
		o.SourceAddr = append(o.SourceAddr, f.source...)
		o.DestinationIdentity = append(o.DestinationIdentity, in.self...)
		o.Reason = append(o.Reason, reason...)
		p.Emit(r)
	}
	v := telemetry.Deny
	if d.Allowed {
		v = telemetry.Allow
	}
	emit(v, d.Policy, d.Rule, d.Reason.String())
	if d.AuditPolicy != "" {
		emit(telemetry.Audit, d.AuditPolicy, d.AuditRule, "audit")
	}
}

// tlsHandshakeRecord is the first byte of every TLS connection.
const tlsHandshakeRecord = 0x16

// io1 reads exactly one byte.
func io1(c net.Conn, b []byte) (int, error) {
	for {
		n, err := c.Read(b)
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// peeked gives back the byte read to tell TLS from plain text.
type peeked struct {
	net.Conn
	first byte
	has   bool
}

func (c *peeked) Read(p []byte) (int, error) {
	if c.has && len(p) > 0 {
		p[0], c.has = c.first, false
		return 1, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite passes a half close on to the socket.
func (c *peeked) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}
