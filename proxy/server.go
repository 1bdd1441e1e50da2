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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/accesslog"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
	"github.com/wasmgate/wasmgate/proxy/listener"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/telemetry/tracing"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// Options configure a Server. The zero value of each field is usable.
type Options struct {
	// Logger receives the server's own logs; nil means no logs.
	Logger *zap.Logger
	// Metrics are the metrics to update; nil means a new set.
	Metrics *metrics.Metrics
	// Plugins runs Wasm filters; nil means a configuration with plugins
	// is rejected.
	Plugins filter.Plugins
	// Mesh is the proxy's workload identity, for listeners and clusters
	// with `tls: {mesh: true}`; nil means such a configuration is
	// rejected.
	Mesh tlsconf.Mesh
	// MeshPolicy is the filter that routes place with
	// `native: mesh_policy` (a sidecar's inbound authorization); nil
	// means such a configuration is rejected.
	MeshPolicy filter.Factory
	// Telemetry receives the access and flow records of requests and
	// connections; nil means none. Apply reconfigures it with the
	// configuration's telemetry section.
	Telemetry *telemetry.Pipeline
	// Tracer, when set, makes a server span per request and a client span
	// per upstream attempt whatever the configuration's
	// telemetry.tracing says (an embedder's own exporter). nil: the
	// server makes them as telemetry.tracing says, with an exporter it
	// rebuilds when that section changes.
	Tracer *tracing.Tracer
	// Hostname names this proxy in the resource of its spans and pushed
	// metrics; "" means the machine's host name.
	Hostname string
	// RED counts requests per route, destination cluster and source
	// identity; nil means not.
	RED *telemetry.RED
	// Sockets, when set, wraps the socket of each listener before the
	// proxy's own layers (flow records, TLS) see its connections; it
	// returns ln as it is for a listener it leaves alone. A sidecar takes
	// the intercepted opaque TCP out of its outbound listener so.
	Sockets func(listener string, ln net.Listener) net.Listener
	// RouteByDestination names the listeners on which a request whose
	// Host matches only the catch-all virtual host ("*") is routed by the
	// address the client connected to, when a virtual host has it as a
	// domain: the connection's local address, which Sockets may report as
	// the original destination of a redirected connection.
	RouteByDestination []string
}

// Server is a running proxy.
type Server struct {
	log     *zap.Logger
	metrics *metrics.Metrics
	plugins filter.Plugins
	pools   *cluster.Pools
	mesh    tlsconf.Mesh
	policy  filter.Factory
	tel     *telemetry.Pipeline
	red     *telemetry.RED
	// fixedTracer is Options.Tracer; without it, out.tracer follows the
	// configuration.
	fixedTracer *tracing.Tracer
	hostname    string
	sockets     func(string, net.Listener) net.Listener
	byDest      []string

	snap atomic.Pointer[Snapshot]
	// writeStalls counts connections cut off by the write timeout.
	writeStalls *prometheus.CounterVec
	// retiring counts replaced snapshots whose retire has not finished:
	// Shutdown waits for them.
	retiring sync.WaitGroup
	// Replaced listeners drain gently (each connection ends on its own)
	// until Shutdown begins and cancels retireCtx; then they drain as the
	// live ones do, until Shutdown's deadline cancels drainCtx.
	retireCtx, drainCtx       context.Context
	cancelRetire, cancelDrain context.CancelFunc
	// draining closes every HTTP/1.1 connection after its response.
	draining atomic.Bool

	mu        sync.Mutex // serialises Apply and Shutdown
	listeners map[string]*listener.Listener
	accessLog *accesslog.Logger
	logCfg    config.AccessLog
	out       outputs // the span exporter and metric push in force
	closed    bool
	version   uint64
	limits    native.Limits // rate limit buckets, kept across reloads
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
		log:         opts.Logger,
		metrics:     opts.Metrics,
		plugins:     opts.Plugins,
		pools:       cluster.NewPools(opts.Metrics),
		mesh:        opts.Mesh,
		policy:      opts.MeshPolicy,
		listeners:   map[string]*listener.Listener{},
		tel:         opts.Telemetry,
		red:         opts.RED,
		fixedTracer: opts.Tracer,
		hostname:    hostnameOr(opts.Hostname),
		sockets:     opts.Sockets,
		byDest:      opts.RouteByDestination,
	}
	s.pools.SetMesh(opts.Mesh)
	s.retireCtx, s.cancelRetire = context.WithCancel(context.Background())
	s.drainCtx, s.cancelDrain = context.WithCancel(context.Background())
	s.writeStalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wasmgate_downstream_write_timeouts_total",
		Help: "Downstream connections closed because a write to the client made no progress for the listener's write timeout.",
	}, []string{"listener"})
	opts.Metrics.Registry.MustRegister(newGauges(s), s.writeStalls)
	return s
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

// StreamCluster implements filter.StreamUpstreams against the live
// snapshot, for the gRPC calls and streams that filters open.
func (s *Server) StreamCluster(name string) (filter.StreamCluster, error) {
	snap := s.snap.Load()
	if snap == nil {
		return nil, fmt.Errorf("%w %q: no configuration yet", filter.ErrUnknownCluster, name)
	}
	return snap.Clusters.StreamCluster(name)
}

var _ filter.StreamUpstreams = (*Server)(nil)

// Metrics returns the server's metrics.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// acquire returns the live snapshot with a reference taken, or nil once
// the server has shut down. The request releases it when it is done.
func (s *Server) acquire() *Snapshot {
	for {
		snap := s.snap.Load()
		if snap == nil || snap.ref() {
			return snap
		}
		if s.snap.Load() == snap {
			return nil // released for good: Shutdown
		}
		// Replaced and released meanwhile: the new one is live.
	}
}

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
	// The telemetry sinks the configuration adds are built first, and
	// put in force with the snapshot.
	tel, err := s.tel.Prepare(cfg.Telemetry)
	if err != nil {
		return err
	}
	outs, err := s.prepareOutputs(cfg.Telemetry)
	if err != nil {
		tel.Discard()
		return err
	}
	snap, set, err := s.build(ctx, cfg, version, old)
	if err != nil {
		tel.Discard()
		outs.discard()
		return err
	}
	discard := func() {
		tel.Discard()
		outs.discard()
		if set != nil {
			set.Discard()
		}
	}
	started, err := s.startListeners(cfg)
	if err != nil {
		discard()
		return err
	}
	logger, replacedLog, err := s.reopenAccessLog(cfg.AccessLog)
	if err != nil {
		for _, l := range started {
			_ = l.Shutdown(context.Background())
		}
		discard()
		return err
	}
	snap.log = logger
	s.commitOutputs(outs)
	snap.tracer = s.tracerNow()
	snap.refs.Store(1) // live

	// Now that the new snapshot is live: serve new listeners; the
	// replaced and removed ones, and a replaced access log, stop when the
	// last request of the old snapshot is done.
	var replaced, removed []*listener.Listener
	for _, l := range started {
		name := l.Config().Name
		prev := s.listeners[name]
		s.listeners[name] = l
		if l.Config().TCPProxy != nil {
			l.ServeTCP(func(c net.Conn) { s.serveTCP(name, c) }, s.flows(name), s.log)
		} else {
			h := &handler{srv: s, listener: name}
			l.Serve(listener.Handler{
				Serve:        h.serve,
				Error:        h.serveError,
				WriteStalled: s.writeStalls.WithLabelValues(name).Inc,
				Sockets:      s.flows(name),
				Flows:        s.tel,
			}, s.log)
		}
		if prev != nil {
			// New connections go to l from now on; prev's keep-alive
			// ones move over after their next response.
			prev.Drain()
			replaced = append(replaced, prev)
		}
	}
	for name, l := range s.listeners {
		if !hasListener(cfg, name) {
			delete(s.listeners, name)
			removed = append(removed, l)
			continue
		}
		if !slices.Contains(started, l) {
			// A kept listener serves the certificates it names as they
			// are now, as it would serve changed files.
			if err := l.SetCertificates(cfg.Certificates); err != nil {
				s.log.Warn("changing TLS certificates failed; the previous ones stay in use",
					zap.String("listener", name), zap.Error(err))
			}
		}
	}
	s.snap.Store(snap)
	tel.Commit()
	s.retireLater(old, replaced, removed, replacedLog, outs.oldTracer)

	live := make([]*cluster.Cluster, 0, len(snap.Clusters))
	for _, c := range snap.Clusters {
		live = append(live, c)
	}
	s.pools.Retain(live)
	if set != nil {
		set.Activate()
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

// startListeners binds the listeners of cfg that are new or whose
// settings changed. A changed listener at the same address takes its
// predecessor's socket over, so no connection is refused during the
// switch.
func (s *Server) startListeners(cfg *config.Config) ([]*listener.Listener, error) {
	var started []*listener.Listener
	for _, lc := range cfg.Listeners {
		prev := s.listeners[lc.Name]
		if prev != nil && prev.Same(lc) {
			continue
		}
		l, err := listener.New(lc, cfg.Certificates, prev, s.mesh)
		if err != nil {
			for _, l := range started {
				_ = l.Shutdown(context.Background())
			}
			return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
		}
		started = append(started, l)
	}
	return started, nil
}

// retireLater gives old, the snapshot just replaced, what it alone used,
// and drops its live reference: its last request stops the listeners and
// closes the access log. Shutdown waits for that. A replaced listener
// retires gently, its connections closed between requests, as its
// successor serves the same address; a removed one shuts down, its idle
// connections closed at once.
func (s *Server) retireLater(old *Snapshot, replaced, removed []*listener.Listener, log *accesslog.Logger, tracer *tracing.Tracer) {
	stop := func() {
		defer s.retiring.Done()
		if log != nil {
			_ = log.Close()
		}
		s.stopTracer(tracer)
		var wg sync.WaitGroup
		for _, l := range replaced {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = l.Retire(s.retireCtx, s.drainCtx)
			}()
		}
		for _, l := range removed {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = l.Shutdown(s.drainCtx)
			}()
		}
		wg.Wait()
	}
	s.retiring.Add(1)
	if old == nil {
		go stop()
		return
	}
	// Listeners drain in the background: retire runs on the request path.
	old.retire = func() { go stop() }
	old.release()
}

// reopenAccessLog returns the access log of c, and the one it replaces,
// if any, which the caller closes once no request logs to it any more.
func (s *Server) reopenAccessLog(c config.AccessLog) (next, replaced *accesslog.Logger, err error) {
	if s.accessLog != nil && equalAccessLog(s.logCfg, c) {
		return s.accessLog, nil, nil
	}
	if c.Path != "" {
		fields := c.Fields
		if len(fields) == 0 {
			fields = config.DefaultAccessLogFields
		}
		next, err = accesslog.Open(c.Path, fields, c.BufferEntries, s.metrics.AccessLogDropped.Inc)
		if err != nil {
			return nil, nil, err
		}
	}
	replaced = s.accessLog
	s.accessLog, s.logCfg = next, c
	return next, replaced, nil
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
func (s *Server) Addr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.listeners[name]; l != nil {
		return l.Addr()
	}
	return nil
}

// StartDraining asks clients to go elsewhere while the listeners still
// serve: every HTTP/1.1 response from now on closes its connection. It is
// what a shutdown delay runs under.
func (s *Server) StartDraining() { s.draining.Store(true) }

// Shutdown stops accepting connections and waits for requests in flight
// to finish, until ctx is done: those of the live snapshot and of replaced
// ones, on the live listeners and on replaced ones still draining. Then it
// closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ls := s.listeners
	s.listeners = map[string]*listener.Listener{}
	live := s.snap.Load()
	log := s.accessLog
	s.accessLog = nil
	s.mu.Unlock()
	s.cancelRetire()
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	for _, l := range ls {
		wg.Add(1)
		go func(l *listener.Listener) {
			defer wg.Done()
			if err := l.Shutdown(ctx); err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		}(l)
	}
	wg.Wait()
	// The live snapshot retires as a replaced one does: its last request
	// closes the access log.
	s.retireLater(live, nil, nil, log, nil)
	retired := make(chan struct{})
	go func() { s.retiring.Wait(); close(retired) }()
	select {
	case <-retired:
	case <-ctx.Done():
		// Replaced listeners close what is left; requests still running
		// find the access log closed and are not logged.
		s.cancelDrain()
		if log != nil {
			_ = log.Close()
		}
		if firstErr == nil {
			firstErr = ctx.Err()
		}
	}
	s.cancelDrain()
	s.pools.Close()
	// The spans and metrics of the last requests go out, even past ctx's
	// end, for at most 5 seconds.
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	s.stopOutputs(octx)
	cancel()
	return firstErr
}

// flows wraps a socket of the listener name so that each connection
// emits one flow record when it closes, while flows have a sink (the
// pipeline may be reconfigured); nil without telemetry.
func (s *Server) flows(name string) func(net.Listener) net.Listener {
	if s.tel == nil && s.sockets == nil {
		return nil
	}
	return func(ln net.Listener) net.Listener {
		if s.sockets != nil {
			ln = s.sockets(name, ln)
		}
		if s.tel != nil {
			ln = s.tel.FlowListener(ln, name)
		}
		return ln
	}
}

// warnInsecure warns about every cluster that does not verify its
// endpoints' certificates, each time such a configuration is applied.
func (s *Server) warnInsecure(cfg *config.Config) {
	for _, name := range cluster.InsecureClusters(cfg) {
		s.log.Warn("cluster does not verify its endpoints' TLS certificates (insecure_skip_verify_i_know_what_i_am_doing): anyone on the path can read and change its traffic",
			zap.String("cluster", name))
	}
}
