package proxy

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/accesslog"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/route"
	"github.com/wasmgate/wasmgate/proxy/telemetry/tracing"
)

// Snapshot is one immutable configuration as the proxy runs it. Each
// request holds a reference to the snapshot it started on, and the server
// one while the snapshot is live; when a reload replaces it, what it alone
// used (a replaced access log, replaced or removed listeners) is stopped
// by the release of its last reference, and Shutdown waits for that.
type Snapshot struct {
	// Version names the configuration: a counter for files, a revision
	// for the control plane.
	Version string
	// Config is the configuration the snapshot was built from; read only.
	Config   *config.Config
	LoadedAt time.Time

	listeners map[string]*listenerSnap
	// Clusters are the snapshot's clusters by name.
	Clusters cluster.Set
	node     *filter.Node
	log      *accesslog.Logger
	// tracer makes the spans of the snapshot's requests; nil: none.
	tracer *tracing.Tracer
	// plugins are the snapshot's Wasm plugins (nil: none), for the
	// network filters of connections the proxy carries for others
	// (ServeOpaque).
	plugins filter.PluginSet

	// refs counts the requests using the snapshot, and one more while it
	// is live. The last release runs retire.
	refs atomic.Int64
	// retire stops what the snapshot used and its successor does not (a
	// replaced access log, replaced listeners). Apply sets it before it
	// drops the live reference.
	retire func()
}

// ref takes a reference unless the snapshot has been released for good.
func (sn *Snapshot) ref() bool {
	for {
		n := sn.refs.Load()
		if n == 0 {
			return false
		}
		if sn.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one runs retire.
func (sn *Snapshot) release() {
	if sn.refs.Add(-1) == 0 && sn.retire != nil {
		sn.retire()
	}
}

// listenerSnap is what the request path of one listener reads.
type listenerSnap struct {
	table *route.Table
	// requestIDKey names the request ID header, in fasthttp's canonical
	// form.
	requestIDKey []byte
	maxBodySize  int64
	// maxConnAge closes a connection after a response once it is older.
	maxConnAge time.Duration
	// byDestination routes by the connection's local address what only
	// the catch-all virtual host matches (Options.RouteByDestination).
	byDestination bool
	// tcp is a TCP listener's (tcp_proxy) part; table is nil then.
	tcp *tcpListener
}

// build compiles cfg into a snapshot, reusing the clusters of old that did
// not change. On error, plugins it prepared are discarded.
func (s *Server) build(ctx context.Context, cfg *config.Config, version string, old *Snapshot) (*Snapshot, filter.PluginSet, error) {
	snap, set, err := s.compile(ctx, cfg, version, old)
	if err != nil {
		if set != nil {
			set.Discard()
		}
		return nil, nil, err
	}
	return snap, set, nil
}

func (s *Server) compile(ctx context.Context, cfg *config.Config, version string, old *Snapshot) (*Snapshot, filter.PluginSet, error) {
	snap := &Snapshot{
		Version:   version,
		Config:    cfg,
		LoadedAt:  time.Now(),
		listeners: map[string]*listenerSnap{},
		Clusters:  cluster.Set{},
		node:      &filter.Node{ID: cfg.Node.ID, Metadata: cfg.Node.Metadata},
	}
	for _, cc := range cfg.Clusters {
		var prev *cluster.Cluster
		if old != nil {
			prev = old.Clusters[cc.Name]
		}
		c, err := cluster.Build(cc, prev, s.pools)
		if err != nil {
			return nil, nil, err
		}
		snap.Clusters[cc.Name] = c
	}
	var set filter.PluginSet
	if len(cfg.Plugins) > 0 {
		if s.plugins == nil {
			return nil, nil, errors.New("plugins are configured but this proxy runs without a Wasm host")
		}
		var err error
		if set, err = s.plugins.Prepare(ctx, cfg.Plugins, s); err != nil {
			return nil, nil, err
		}
		// Plugins read route and cluster metadata as properties.
		if u, ok := set.(interface{ UseConfig(*config.Config) }); ok {
			u.UseConfig(cfg)
		}
	}
	snap.plugins = set
	deps := route.Deps{Clusters: snap.Clusters, Metrics: s.metrics, FilterSet: set, Limits: &s.limits, MeshPolicy: s.policy}
	if set != nil {
		deps.Filter = func(ref config.FilterRef, _, routeName string) (filter.Factory, error) {
			return set.Factory(ref, routeName)
		}
	}
	for _, lc := range cfg.Listeners {
		if lc.TCPProxy != nil {
			tl, err := compileTCP(lc.TCPProxy, lc.Name, snap.Clusters, set, s.metrics)
			if err != nil {
				return nil, set, err
			}
			snap.listeners[lc.Name] = &listenerSnap{tcp: tl}
			continue
		}
		deps.Prev = nil
		if old != nil && old.listeners[lc.Name] != nil {
			deps.Prev = old.listeners[lc.Name].table
		}
		table, err := route.Compile(cfg, lc.Name, deps)
		if err != nil {
			return nil, set, err
		}
		ls := &listenerSnap{table: table, maxBodySize: lc.MaxRequestBodyBytes}
		ls.requestIDKey = fasthttp.AppendNormalizedHeaderKey(nil, lc.RequestIDHeader)
		ls.maxConnAge = lc.MaxConnectionAge.D()
		ls.byDestination = slices.Contains(s.byDest, lc.Name)
		snap.listeners[lc.Name] = ls
	}
	return snap, set, nil
}
