// Package proxy is the data plane: listeners, the request path, and the
// immutable snapshot of routes, clusters and filters that a reload swaps.
//
// A Server serves one Snapshot at a time behind an atomic pointer. Apply
// builds a new snapshot from a validated configuration off the request
// path and swaps it in; requests in flight finish on the snapshot they
// started with. Clusters whose configuration did not change are carried
// over as they are, with their connection pools.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/accesslog"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/route"
)

// Plugins prepares the Wasm filters of a configuration. The proxy calls
// Prepare while building a snapshot, then Activate once the snapshot is
// live, or Discard when the configuration was rejected after all.
type Plugins interface {
	Prepare(ctx context.Context, plugins []config.Plugin) (PluginSet, error)
	Activate(set PluginSet)
	Discard(set PluginSet)
}

// PluginSet gives the filter factory of one attachment.
type PluginSet interface {
	Factory(ref config.FilterRef, routeName string) (filter.Factory, error)
}

// Options configure a Server. The zero value of each field is usable.
type Options struct {
	// Logger receives the server's own logs; nil means no logs.
	Logger *zap.Logger
	// Metrics are the metrics to update; nil means a new set.
	Metrics *metrics.Metrics
	// Plugins runs Wasm filters; nil means a configuration with plugins
	// is rejected.
	Plugins Plugins
}

// Server is a running proxy.
type Server struct {
	log     *zap.Logger
	metrics *metrics.Metrics
	plugins Plugins
	pools   *cluster.Pools

	snap atomic.Pointer[Snapshot]
	// draining closes every HTTP/1.1 connection after its response.
	draining atomic.Bool

	mu        sync.Mutex // serialises Apply and Shutdown
	listeners map[string]*listener
	accessLog *accesslog.Logger
	logCfg    config.AccessLog
	closed    bool
	version   uint64
	limiters  limiters // rate limit buckets, kept across reloads
}

// Snapshot is one immutable configuration as the proxy runs it.
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
}

// listenerSnap is what the request path of one listener reads.
type listenerSnap struct {
	table   *route.Table
	trusted []netip.Prefix
	// requestIDKey names the request ID header, in fasthttp's canonical
	// form.
	requestIDKey []byte
	maxBodySize  int64
	// policies are the routes' retry policies and rate limits; nil when
	// no route has one.
	policies map[*route.Route]*routePolicy
	// maxConnAge closes a connection after a response once it is older.
	maxConnAge time.Duration
	// setXFCC sets X-Forwarded-Client-Cert from the client's certificate.
	setXFCC bool
}

// NewServer returns a server with no configuration; Apply gives it one.
func NewServer(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	s := &Server{
		log:       opts.Logger,
		metrics:   opts.Metrics,
		plugins:   opts.Plugins,
		pools:     cluster.NewPools(opts.Metrics),
		listeners: map[string]*listener{},
	}
	opts.Metrics.Registry.MustRegister(newGauges(s))
	return s
}

// SetPlugins gives the server its Wasm host. It must be called before the
// first Apply.
func (s *Server) SetPlugins(p Plugins) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plugins = p
}

// Call implements filter.Upstreams against the live snapshot, for requests
// that filters make outside any one request (ticks, root contexts).
func (s *Server) Call(cluster string, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	snap := s.snap.Load()
	if snap == nil {
		return fmt.Errorf("%w %q: no configuration yet", filter.ErrUnknownCluster, cluster)
	}
	return snap.Clusters.Call(cluster, req, resp, timeout)
}

var _ filter.Upstreams = (*Server)(nil)

// Metrics returns the server's metrics.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// Snapshot returns the live snapshot, or nil before the first Apply.
func (s *Server) Snapshot() *Snapshot { return s.snap.Load() }

// Apply makes cfg the live configuration. cfg must have been normalised
// and validated (config.Parse does both). On error nothing changes: the
// old snapshot keeps serving. version names the configuration; empty means
// a counter.
func (s *Server) Apply(ctx context.Context, cfg *config.Config, version string) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if err != nil {
			s.metrics.Reloads.WithLabelValues("failure").Inc()
			s.metrics.LastReloadSuccess.Set(0)
		}
	}()
	if s.closed {
		return errors.New("server is shut down")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.warnInsecure(cfg)
	old := s.snap.Load()
	s.version++
	if version == "" {
		version = fmt.Sprintf("%d", s.version)
	}
	snap, set, err := s.build(ctx, cfg, version, old)
	if err != nil {
		return err
	}
	discard := func() {
		if set != nil {
			s.plugins.Discard(set)
		}
	}
	started, err := s.startListeners(cfg)
	if err != nil {
		discard()
		return err
	}
	logger, err := s.reopenAccessLog(cfg.AccessLog)
	if err != nil {
		for _, l := range started {
			l.stop(0)
		}
		discard()
		return err
	}
	snap.log = logger

	s.snap.Store(snap)

	// Now that the new snapshot is live: serve new listeners, stop the
	// replaced and removed ones, drop unused pools and plugins.
	for _, l := range started {
		if prev := s.listeners[l.cfg.Name]; prev != nil {
			go prev.stop(30 * time.Second)
		}
		s.listeners[l.cfg.Name] = l
		l.serve(s)
	}
	for name, l := range s.listeners {
		if !hasListener(cfg, name) {
			delete(s.listeners, name)
			go l.stop(30 * time.Second)
			continue
		}
		if l.front.tls != nil && !slices.Contains(started, l) {
			// A kept listener serves the certificates it names as they
			// are now, as it would serve changed files.
			if err := l.front.tls.SetCertificates(cfg.Certificates); err != nil {
				s.log.Warn("changing TLS certificates failed; the previous ones stay in use",
					zap.String("listener", name), zap.Error(err))
			}
		}
	}
	live := make([]*cluster.Cluster, 0, len(snap.Clusters))
	for _, c := range snap.Clusters {
		live = append(live, c)
	}
	s.pools.Retain(live)
	if s.plugins != nil && set != nil {
		s.plugins.Activate(set)
	}
	s.metrics.Reloads.WithLabelValues("success").Inc()
	s.metrics.LastReloadSuccess.Set(1)
	s.metrics.LastReloadTime.Set(float64(snap.LoadedAt.Unix()))
	s.metrics.ConfigVersion.Reset()
	s.metrics.ConfigVersion.WithLabelValues(version).Set(1)
	return nil
}

func hasListener(cfg *config.Config, name string) bool {
	for _, l := range cfg.Listeners {
		if l.Name == name {
			return true
		}
	}
	return false
}

// build compiles cfg into a snapshot, reusing the clusters of old that did
// not change. On error, plugins it prepared are discarded.
func (s *Server) build(ctx context.Context, cfg *config.Config, version string, old *Snapshot) (*Snapshot, PluginSet, error) {
	snap, set, err := s.compile(ctx, cfg, version, old)
	if err != nil {
		if set != nil {
			s.plugins.Discard(set)
		}
		return nil, nil, err
	}
	return snap, set, nil
}

func (s *Server) compile(ctx context.Context, cfg *config.Config, version string, old *Snapshot) (*Snapshot, PluginSet, error) {
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
	var set PluginSet
	if len(cfg.Plugins) > 0 {
		if s.plugins == nil {
			return nil, nil, errors.New("plugins are configured but this proxy runs without a Wasm host")
		}
		var err error
		if set, err = s.plugins.Prepare(ctx, cfg.Plugins); err != nil {
			return nil, nil, err
		}
		// Plugins read route and cluster metadata as properties.
		if u, ok := set.(interface{ UseConfig(*config.Config) }); ok {
			u.UseConfig(cfg)
		}
	}
	deps := route.Deps{Clusters: snap.Clusters, Metrics: s.metrics, FilterSet: set}
	if set != nil {
		deps.Filter = func(ref config.FilterRef, _, routeName string) (filter.Factory, error) {
			return set.Factory(ref, routeName)
		}
	}
	for _, lc := range cfg.Listeners {
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
		ls.policies = s.routePolicies(cfg, table)
		ls.maxConnAge = lc.MaxConnectionAge.D()
		ls.setXFCC = lc.TLS != nil && lc.TLS.ForwardClientCert == config.ForwardClientCertSanitizeSet
		for _, p := range lc.TrustedProxies {
			pfx, err := config.ParsePrefix(p)
			if err != nil {
				return nil, set, err
			}
			ls.trusted = append(ls.trusted, pfx)
		}
		snap.listeners[lc.Name] = ls
	}
	return snap, set, nil
}

// startListeners binds the listeners of cfg that are new or whose socket
// settings changed. Sockets use SO_REUSEPORT, so a changed listener binds
// beside the old one and no connection is refused during the switch.
func (s *Server) startListeners(cfg *config.Config) ([]*listener, error) {
	var started []*listener
	for _, lc := range cfg.Listeners {
		if prev := s.listeners[lc.Name]; prev != nil && prev.sameSocket(lc) {
			continue
		}
		l, err := newListener(lc, cfg.Certificates)
		if err != nil {
			for _, l := range started {
				l.stop(0)
			}
			return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
		}
		started = append(started, l)
	}
	return started, nil
}

func (s *Server) reopenAccessLog(c config.AccessLog) (*accesslog.Logger, error) {
	if s.accessLog != nil && equalAccessLog(s.logCfg, c) {
		return s.accessLog, nil
	}
	var next *accesslog.Logger
	if c.Path != "" {
		fields := c.Fields
		if len(fields) == 0 {
			fields = config.DefaultAccessLogFields
		}
		var err error
		next, err = accesslog.Open(c.Path, fields, c.BufferEntries, s.metrics.AccessLogDropped.Inc)
		if err != nil {
			return nil, err
		}
	}
	if prev := s.accessLog; prev != nil {
		// Requests of the old snapshot may still log for a while.
		time.AfterFunc(time.Minute, func() { _ = prev.Close() })
	}
	s.accessLog, s.logCfg = next, c
	return next, nil
}

func equalAccessLog(a, b config.AccessLog) bool {
	if a.Path != b.Path || a.BufferEntries != b.BufferEntries || len(a.Fields) != len(b.Fields) {
		return false
	}
	for i := range a.Fields {
		if a.Fields[i] != b.Fields[i] {
			return false
		}
	}
	return true
}

// Addr returns the bound address of a listener, or nil.
func (s *Server) Addr(listener string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.listeners[listener]; l != nil {
		return l.ln.Addr()
	}
	return nil
}

// StartDraining asks clients to go elsewhere while the listeners still
// serve: every HTTP/1.1 response from now on closes its connection. It is
// what a shutdown delay runs under.
func (s *Server) StartDraining() { s.draining.Store(true) }

// Shutdown stops accepting connections and waits for requests in flight
// to finish, until ctx is done. Then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	ls := s.listeners
	s.listeners = map[string]*listener{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	for _, l := range ls {
		wg.Add(1)
		go func(l *listener) {
			defer wg.Done()
			fronts := make(chan struct{})
			go func() { l.front.shutdown(ctx); close(fronts) }()
			defer func() { <-fronts }()
			if err := l.srv.ShutdownWithContext(ctx); err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		}(l)
	}
	wg.Wait()
	s.pools.Close()
	s.mu.Lock()
	if s.accessLog != nil {
		_ = s.accessLog.Close()
		s.accessLog = nil
	}
	s.mu.Unlock()
	return firstErr
}

// listener is one bound socket and its HTTP server.
type listener struct {
	cfg  config.Listener
	ln   net.Listener
	srv  *fasthttp.Server
	done chan struct{}
	// front serves TLS, HTTP/2 and HTTP/3 for the listener.
	front *front
}

func (l *listener) sameSocket(c config.Listener) bool {
	return l.cfg.Address == c.Address && l.cfg.MaxRequestHeaderBytes == c.MaxRequestHeaderBytes &&
		l.cfg.IdleTimeout == c.IdleTimeout && l.cfg.MaxRequestBodyBytes == c.MaxRequestBodyBytes &&
		l.cfg.HeaderReadTimeout == c.HeaderReadTimeout && l.cfg.BodyReadTimeout == c.BodyReadTimeout &&
		sameProtocols(l.cfg, c)
}

func newListener(c config.Listener, certs []config.Certificate) (*listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", c.Address)
	if err != nil {
		return nil, err
	}
	f, err := newFront(c, ln.Addr(), certs)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return &listener{cfg: c, ln: ln, done: make(chan struct{}), front: f}, nil
}

// serve starts the listener's HTTP server on the proxy's request path.
func (l *listener) serve(s *Server) {
	h := &handler{srv: s, listener: l.cfg.Name}
	l.srv = &fasthttp.Server{
		Handler:                      h.serve,
		ErrorHandler:                 h.serveError,
		Name:                         "wasmgate",
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		ReadBufferSize:               l.cfg.MaxRequestHeaderBytes,
		IdleTimeout:                  l.cfg.IdleTimeout.Or(60 * time.Second),
		ReadTimeout:                  l.cfg.HeaderReadTimeout.Or(DefaultHeaderReadTimeout),
		HeaderReceived:               headerReceived(l.cfg),
		StreamRequestBody:            true,
		MaxRequestBodySize:           maxBodySize(l.cfg.MaxRequestBodyBytes),
		CloseOnShutdown:              true,
		DisablePreParseMultipartForm: true,
		Logger:                       fasthttpLogger{s.log},
	}
	var ln net.Listener = l.ln
	if l.cfg.TLS == nil {
		ln = gatherListener{ln, readSlack(l.cfg)}
	}
	ln = l.front.start(s, l.srv, ln)
	go func() {
		defer close(l.done)
		if err := l.srv.Serve(ln); err != nil {
			s.log.Error("listener stopped", zap.String("listener", l.cfg.Name), zap.Error(err))
		}
	}()
}

func maxBodySize(n int64) int {
	if n <= 0 || n > int64(^uint(0)>>1) {
		return int(^uint(0) >> 1)
	}
	return int(n)
}

// stop closes the socket and lets requests in flight finish, up to grace.
func (l *listener) stop(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if l.srv == nil {
		_ = l.ln.Close()
		l.front.shutdown(ctx)
		return
	}
	fronts := make(chan struct{})
	go func() { l.front.shutdown(ctx); close(fronts) }()
	_ = l.srv.ShutdownWithContext(ctx)
	<-fronts
}

type fasthttpLogger struct{ log *zap.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.log.Debug(fmt.Sprintf(format, args...))
}
