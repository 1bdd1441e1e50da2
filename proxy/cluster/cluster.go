// Package cluster holds upstream clusters: their endpoints, the pooled
// keep-alive connections to each, and the balancer that picks one.
//
// A Cluster is built from its config.Cluster when a snapshot is built and
// is immutable afterwards but for per-endpoint counters. Connection pools
// live in a Pools registry keyed by endpoint address and connection
// settings, so a reload that keeps an endpoint keeps its connections.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/balancer"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// Defaults for unset cluster fields.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
	DefaultMaxConns       = 1024
)

// Cluster is a set of endpoints and a balancer over them.
type Cluster struct {
	Name string
	cfg  config.Cluster

	endpoints []*Endpoint
	lb        balancer.Balancer
	hash      hashPolicy

	// hosts is what Pick balances over: the healthy endpoints, or all of
	// them in panic. lb (over all endpoints) is built once and reused.
	hosts   atomic.Pointer[hostSet]
	state   *clusterState
	outlier *outlierPolicy
	mu      sync.Mutex // serialises rebuilds of hosts
	ejectMu sync.Mutex // serialises ejections
}

// Endpoint is one upstream address within a cluster.
type Endpoint struct {
	Addr   string
	weight int
	pool   *pool
	// mux is, for a cluster whose protocol is downstream, the HTTP/2
	// pool that carries the requests that came in multiplexed (pool
	// carries the HTTP/1.1 ones); nil otherwise.
	mux *pool

	c       *Cluster
	state   *hostState
	outlier *outlierPolicy // nil without outlier detection
	// breakers is the cluster's breaker state when it has circuit
	// breakers (pending requests are counted), else nil.
	breakers *clusterState
}

var _ balancer.Host = (*Endpoint)(nil)

// Weight implements balancer.Host.
func (e *Endpoint) Weight() int { return e.weight }

// ActiveRequests implements balancer.Host.
func (e *Endpoint) ActiveRequests() int64 {
	if e.mux != nil {
		return e.pool.active.Load() + e.mux.active.Load()
	}
	return e.pool.active.Load()
}

// Key implements balancer.Host.
func (e *Endpoint) Key() string { return e.Addr }

// Conns is the number of open connections to the endpoint.
func (e *Endpoint) Conns() int {
	if e.mux != nil {
		return e.pool.conns() + e.mux.conns()
	}
	return e.pool.conns()
}

func (p *pool) conns() int {
	if p.h2 != nil {
		return int(p.h2.conns.Load())
	}
	return p.client.ConnsCount()
}

// Requests is the number of requests sent to the endpoint since its pool
// was created.
func (e *Endpoint) Requests() uint64 {
	if e.mux != nil {
		return e.pool.requests.Load() + e.mux.requests.Load()
	}
	return e.pool.requests.Load()
}

// multiplexed returns the pool for a request that came in on HTTP/2 or
// HTTP/3: the HTTP/2 pool of a downstream cluster, else the only one.
func (e *Endpoint) multiplexed() *pool {
	if e.mux != nil {
		return e.mux
	}
	return e.pool
}

// pool is the connection pool of one endpoint address.
type pool struct {
	key    poolKey
	client *fasthttp.HostClient // HTTP/1.1 endpoints
	h2     *h2Client            // HTTP/2 endpoints
	tls    *tls.Config          // nil for cleartext
	active atomic.Int64
	// requests counts requests sent, for /clusters.
	requests atomic.Uint64
}

type poolKey struct {
	// breaker is the cluster's name when its circuit breakers bound the
	// pool's connections, so that the pool is the cluster's own.
	breaker string

	addr           string
	connectTimeout time.Duration
	idleTimeout    time.Duration
	maxConns       int
	http2          bool
	tls            string // tlsKey of the cluster's TLS settings
}

// Pools holds connection pools across snapshots. Build takes pools from it;
// Retain drops the pools no live cluster uses.
type Pools struct {
	mu    sync.Mutex
	pools map[poolKey]*pool
	// Health and breaker state, kept across reloads like the pools.
	states   map[stateKey]*hostState
	clusters map[string]*clusterState
	checkers map[*Cluster]*checker
	metrics  *metrics.Metrics
	mesh     tlsconf.Mesh // the workload identity for mesh clusters
}

// NewPools returns an empty registry. m receives the clusters'
// resilience metrics; nil means none.
func NewPools(m ...*metrics.Metrics) *Pools {
	ps := &Pools{pools: map[poolKey]*pool{}, states: map[stateKey]*hostState{},
		clusters: map[string]*clusterState{}, checkers: map[*Cluster]*checker{}}
	if len(m) > 0 {
		ps.metrics = m[0]
	}
	return ps
}

func (ps *Pools) get(k poolKey, tlsConf *tls.Config) *pool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p, ok := ps.pools[k]; ok {
		return p
	}
	if k.http2 {
		p := &pool{key: k, h2: newH2Client(k, tlsConf), tls: tlsConf}
		ps.pools[k] = p
		return p
	}
	dialer := &fasthttp.TCPDialer{Concurrency: 0, DNSCacheDuration: time.Minute}
	timeout := k.connectTimeout
	p := &pool{key: k, client: &fasthttp.HostClient{
		Addr:                          k.addr,
		Dial:                          dialTCP(dialer, timeout),
		MaxConns:                      k.maxConns,
		MaxIdleConnDuration:           k.idleTimeout,
		MaxIdemponentCallAttempts:     1, // retries are the route's business
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		ReadBufferSize:                32 << 10,
		WriteBufferSize:               16 << 10,
		MaxConnWaitTimeout:            ps.connWait(k),
		// The connection released last is reused first: its state is
		// the likeliest still in the CPU's caches, it is the least likely
		// to have been closed by the upstream, and connections a burst
		// opened stay idle and are closed after idleTimeout.
		ConnPoolStrategy: fasthttp.LIFO,
		IsTLS:            tlsConf != nil,
		TLSConfig:        tlsConf,
	}, tls: tlsConf}
	if k.breaker != "" {
		p.client.Dial = ps.clusterStateLocked(k.breaker).dialer(p.client.Dial)
	}
	if tlsConf == nil {
		p.client.Dial = oneWaitDialer(p.client.Dial)
	}
	ps.pools[k] = p
	return p
}

func dialTCP(d *fasthttp.TCPDialer, timeout time.Duration) func(string) (net.Conn, error) {
	return func(addr string) (net.Conn, error) { return d.DialTimeout(addr, timeout) }
}

// oneWaitDialer makes the cleartext connections dial returns
// oneWaitConns.
func oneWaitDialer(dial func(string) (net.Conn, error)) func(string) (net.Conn, error) {
	return func(addr string) (net.Conn, error) {
		c, err := dial(addr)
		if err != nil {
			return nil, err
		}
		inner := c
		if cc, ok := inner.(*countedConn); ok {
			inner = cc.Conn
		}
		tcp, ok := inner.(*net.TCPConn)
		if !ok {
			return c, nil
		}
		return newOneWaitConn(c, tcp), nil
	}
}

// Retain keeps the pools used by the given clusters and closes the idle
// connections of the others. Requests still in flight on a dropped pool
// finish; their connections close when released.
func (ps *Pools) Retain(live []*Cluster) {
	used := map[poolKey]bool{}
	for _, c := range live {
		for _, e := range c.endpoints {
			used[e.pool.key] = true
			if e.mux != nil {
				used[e.mux.key] = true
			}
		}
	}
	ps.mu.Lock()
	var drop []*pool
	for k, p := range ps.pools {
		if !used[k] {
			drop = append(drop, p)
			delete(ps.pools, k)
		}
	}
	stop := ps.retainHealth(live)
	ps.mu.Unlock()
	for _, s := range stop {
		s.Close()
	}
	for _, c := range live {
		c.rebuild()
	}
	for _, p := range drop {
		if p.h2 != nil {
			p.h2.tr.CloseIdleConnections()
			continue
		}
		p.client.CloseIdleConnections()
	}
}

// Build makes a cluster from its configuration. When prev was built from an
// identical configuration it is returned as it is, keeping its balancer
// state; otherwise endpoints reuse the pools of ps. endpoints may be empty
// (a registry-discovered cluster with nothing registered): Pick then
// returns nil.
func Build(cfg config.Cluster, prev *Cluster, ps *Pools) (*Cluster, error) {
	if prev != nil && reflect.DeepEqual(prev.cfg, cfg) {
		return prev, nil
	}
	c := &Cluster{Name: cfg.Name, cfg: cfg, state: ps.clusterState(cfg), outlier: newOutlierPolicy(cfg.OutlierDetection)}
	var err error
	if c.hash, err = newHashPolicy(cfg.HashPolicy); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cfg.Name, err)
	}
	hosts := make([]balancer.Host, 0, len(cfg.Endpoints))
	for _, ep := range cfg.Endpoints {
		k := poolKey{
			addr:           ep.Address,
			connectTimeout: cfg.ConnectTimeout.Or(DefaultConnectTimeout),
			idleTimeout:    cfg.IdleTimeout.Or(DefaultIdleTimeout),
			maxConns:       cfg.MaxConnectionsPerEndpoint,
			http2:          cfg.Protocol == config.ProtocolHTTP2,
			tls:            tlsKey(cfg.TLS),
		}
		if k.maxConns == 0 {
			k.maxConns = DefaultMaxConns
		}
		if cfg.CircuitBreakers != nil {
			k.breaker = cfg.Name
		}
		proto := cfg.Protocol
		if proto == config.ProtocolDownstream {
			proto = config.ProtocolHTTP1
		}
		tlsConf, err := clientTLS(cfg, ep.Address, proto, ps.mesh)
		if err != nil {
			return nil, err
		}
		e := &Endpoint{Addr: ep.Address, weight: ep.Weight, pool: ps.get(k, tlsConf)}
		if cfg.Protocol == config.ProtocolDownstream {
			mk := k
			mk.http2 = true
			muxConf, err := clientTLS(cfg, ep.Address, config.ProtocolHTTP2, ps.mesh)
			if err != nil {
				return nil, err
			}
			e.mux = ps.get(mk, muxConf)
		}
		if e.weight == 0 {
			e.weight = 1
		}
		e.c, e.outlier, e.state = c, c.outlier, ps.hostState(c, ep.Address)
		if cfg.CircuitBreakers != nil {
			e.breakers = c.state
		}
		c.endpoints = append(c.endpoints, e)
		hosts = append(hosts, e)
	}
	if len(hosts) > 0 {
		c.lb, err = balancer.New(cfg.LBPolicy, hosts, balancer.Options{RingSize: cfg.RingSize})
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", cfg.Name, err)
		}
	}
	c.rebuild()
	return c, nil
}

// Config returns the configuration the cluster was built from.
func (c *Cluster) Config() config.Cluster { return c.cfg }

// Endpoints returns the cluster's endpoints; the slice must not be changed.
func (c *Cluster) Endpoints() []*Endpoint { return c.endpoints }

// Pick chooses an endpoint for a request, or returns nil when the cluster
// has none. It is lock-free and allocates nothing.
func (c *Cluster) Pick(ctx *fasthttp.RequestCtx) *Endpoint {
	var h uint64
	if c.hash.kind != hashNone {
		h = c.hash.of(ctx)
	}
	return c.PickConn(h)
}

// PickConn chooses an endpoint for key, what a consistent-hash cluster
// hashes (a request's hash policy, or a TCP listener's client address).
// It returns nil when the cluster has none.
func (c *Cluster) PickConn(key uint64) *Endpoint {
	hs := c.hosts.Load()
	if hs.lb == nil {
		return nil
	}
	i := hs.lb.Pick(key)
	if i < 0 {
		return nil
	}
	return hs.eps[i]
}

// Call sends a request made by a filter to an endpoint of the cluster and
// reads the whole response.
func (c *Cluster) Call(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	hs := c.hosts.Load()
	if hs.lb == nil {
		return ErrNoEndpoint
	}
	i := hs.lb.Pick(0)
	if i < 0 {
		return ErrNoEndpoint
	}
	// A filter's call wants the whole body: the pool's client reads it.
	e := hs.eps[i]
	e.pool.active.Add(1)
	defer e.pool.active.Add(-1)
	e.pool.requests.Add(1)
	if e.pool.h2 != nil {
		return e.pool.h2.call(req, resp, timeout)
	}
	return e.pool.client.DoTimeout(req, resp, timeout)
}

// Stream implements filter.StreamCluster: it opens a streaming exchange
// with an endpoint of an HTTP/2 cluster.
func (c *Cluster) Stream(ctx context.Context, req *fasthttp.Request, body io.Reader, resp *fasthttp.Response) (io.ReadCloser, error) {
	hs := c.hosts.Load()
	if hs.lb == nil {
		return nil, ErrNoEndpoint
	}
	i := hs.lb.Pick(0)
	if i < 0 {
		return nil, ErrNoEndpoint
	}
	e := hs.eps[i]
	p := e.multiplexed()
	if p.h2 == nil {
		return nil, fmt.Errorf("cluster %q: %w", c.Name, filter.ErrNotHTTP2)
	}
	p.requests.Add(1)
	p.active.Add(1)
	rc, err := p.h2.stream(ctx, req, body, resp)
	if err != nil || rc == http.NoBody {
		p.active.Add(-1)
		return rc, err
	}
	return &activeStream{ReadCloser: rc, active: &p.active}, nil
}

// activeStream counts a stream among its endpoint's active requests until
// it is closed.
type activeStream struct {
	io.ReadCloser
	active *atomic.Int64
	once   sync.Once
}

func (s *activeStream) Close() error {
	s.once.Do(func() { s.active.Add(-1) })
	return s.ReadCloser.Close()
}

// ErrNoEndpoint is returned when a cluster has no endpoint to send to.
var ErrNoEndpoint = errors.New("no endpoint available")

// Set is the clusters of one snapshot by name; it implements
// filter.Upstreams for calls that filters make.
type Set map[string]*Cluster

var _ filter.Upstreams = Set(nil)

// Call implements filter.Upstreams.
func (s Set) Call(cluster string, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	c, ok := s[cluster]
	if !ok {
		return fmt.Errorf("%w %q", filter.ErrUnknownCluster, cluster)
	}
	return c.Call(req, resp, timeout)
}

var _ filter.StreamUpstreams = Set(nil)

// StreamCluster implements filter.StreamUpstreams.
func (s Set) StreamCluster(name string) (filter.StreamCluster, error) {
	c, ok := s[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", filter.ErrUnknownCluster, name)
	}
	if c.cfg.Protocol != config.ProtocolHTTP2 && c.cfg.Protocol != config.ProtocolDownstream {
		return nil, fmt.Errorf("cluster %q: %w", name, filter.ErrNotHTTP2)
	}
	return c, nil
}
