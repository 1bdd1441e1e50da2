package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/identity"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

type logFlags struct {
	level  string
	format string
}

func (f *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.level, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&f.format, "log-format", "console", "log format: console or json")
}

func (f *logFlags) build() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(f.level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	var zc zap.Config
	switch f.format {
	case "json":
		zc = zap.NewProductionConfig()
	case "console":
		zc = zap.NewDevelopmentConfig()
		zc.DisableStacktrace = true
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	default:
		return nil, fmt.Errorf("--log-format: want console or json, not %q", f.format)
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.OutputPaths = []string{"stderr"}
	return zc.Build()
}

func newRunCmd() *cobra.Command {
	var (
		file     string
		cacheDir string
		logs     logFlags
		etcd     etcdFlags
		ef       etcdRunFlags
		idf      identityFlags
		sf       sidecarFlags
	)
	cmd := &cobra.Command{
		Use:   "run (-c FILE | --etcd-endpoints URLS)",
		Short: "Run the proxy on a configuration file, reloading it when it changes, or on the control plane's etcd",
		Long: `run serves one of two sources of configuration:

  -c FILE               a YAML or JSON file, reloaded when it changes and on SIGHUP
  --etcd-endpoints URLS the control plane's etcd: the proxy lists the configuration,
                        watches it, applies every change in milliseconds, registers
                        itself, and keeps the last good configuration on disk so that
                        it serves even when it starts while etcd is unreachable

SIGTERM (or Ctrl-C) drains: /ready fails, listeners stop accepting, and
requests in flight get up to the drain timeout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.build()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			mesh, err := idf.start(ctx, log)
			if err != nil {
				return err
			}
			if sf.on {
				return runSidecar(ctx, &sf, file, mesh, &idf, &etcd, &ef, cacheDir, log)
			}
			if len(etcd.endpoints) > 0 {
				if file != "" {
					return &exitError{code: exitFailure, err: fmt.Errorf("-c and --etcd-endpoints are two sources: give one")}
				}
				cli, err := etcd.client()
				if err != nil {
					return err
				}
				defer cli.Close()
				src := etcdSource{client: cli, prefix: ef.prefix, cacheFile: ef.cacheFile, register: ef.registerAddress()}
				if ef.secretFile != "" {
					if src.secret, err = secret.LoadKey(ef.secretFile); err != nil {
						return &exitError{code: exitInvalid, err: fmt.Errorf("--secret-key-file: %w", err)}
					}
				}
				boot, err := ef.bootstrap(false)
				if err != nil {
					return err
				}
				r, _, err := runFromEtcd(ctx, src, boot, log, runOptions{cacheDir: cacheDir, mesh: mesh, localConfig: ef.localConfig})
				if err != nil {
					return err
				}
				return r.wait(ctx)
			}
			if file == "" {
				return &exitError{code: exitFailure, err: fmt.Errorf("give a configuration: -c FILE or --etcd-endpoints URLS")}
			}
			cfg, err := config.LoadFile(file)
			if err != nil {
				return &exitError{code: exitInvalid, err: fmt.Errorf("invalid configuration:\n%w", err)}
			}
			r, err := startProxy(ctx, cfg, log, runOptions{cacheDir: cacheDir, mesh: mesh})
			if err != nil {
				return err
			}
			go r.watchFile(ctx, file)
			return r.wait(ctx)
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "configuration file (YAML or JSON)")
	cmd.Flags().StringVar(&cacheDir, "wasm-cache-dir", defaultCacheDir(), "directory of compiled Wasm code, kept across restarts")
	etcd.register(cmd, "follow the configuration kept in this etcd cluster (comma-separated client URLs) instead of a file")
	ef.register(cmd)
	logs.register(cmd)
	idf.register(cmd)
	sf.register(cmd)
	return cmd
}

// etcdRunFlags are the proxy's own settings when it follows etcd.
type etcdRunFlags struct {
	prefix    string
	cacheFile string
	announce  string
	admin     string
	accessLog string
	nodeID    string
	drain     time.Duration
	delay     time.Duration
	// secretFile holds the key that decrypts certificates' private keys.
	secretFile string
	// The admin endpoints' guards (config.Admin).
	adminHosts []string
	adminPprof bool
	adminToken string
	// localConfig is a file whose telemetry section configures the
	// proxy's telemetry: the control plane's configuration carries none.
	localConfig string
}

func (f *etcdRunFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.prefix, "etcd-prefix", "/wasmgate", "etcd key prefix of the configuration")
	fl.StringVar(&f.cacheFile, "cache-file", defaultCacheFile(".wasmgate"), "file keeping the last good configuration from etcd")
	fl.StringVar(&f.announce, "register-address", "", "address announced in the control plane's registry (default: the admin address)")
	fl.StringVar(&f.admin, "admin", config.DefaultAdminAddress, `with --etcd-endpoints: admin endpoints host:port ("off" for none)`)
	fl.StringSliceVar(&f.adminHosts, "admin-allowed-hosts", nil, "with --etcd-endpoints: Host names the admin endpoints answer besides IP addresses and localhost")
	fl.BoolVar(&f.adminPprof, "admin-pprof", false, "with --etcd-endpoints: serve Go's profiler under /debug/pprof/ on the admin endpoints")
	fl.StringVar(&f.adminToken, "admin-token-file", "", "with --etcd-endpoints: file of the bearer token the admin endpoints require (but /healthz and /ready)")
	fl.StringVar(&f.accessLog, "access-log", "stdout", `with --etcd-endpoints: access log path ("" for none)`)
	fl.StringVar(&f.nodeID, "node-id", "", "with --etcd-endpoints: this proxy's id (default: the host name)")
	fl.StringVar(&f.secretFile, "secret-key-file", "", "with --etcd-endpoints: file of the control plane's secret key, to decrypt certificates' private keys")
	fl.StringVar(&f.localConfig, "local-config", "", "with --etcd-endpoints: a YAML or JSON file holding this proxy's telemetry section (record sinks, tracing, metric push); it may hold nothing else; SIGHUP reads its sinks and kinds again")
	fl.DurationVar(&f.drain, "drain-timeout", 15*time.Second, "with --etcd-endpoints: how long SIGTERM waits for requests in flight")
	fl.DurationVar(&f.delay, "shutdown-delay", 0, "with --etcd-endpoints: how long SIGTERM keeps serving, with /ready failing, before the drain")
}

// bootstrap is the proxy-local part of the configuration: the flags, and
// the telemetry section of --local-config.
//
// A sidecar (sidecar true) builds its configuration itself: its
// --local-config may give plugins too, for its filters.
func (f *etcdRunFlags) bootstrap(sidecar bool) (*config.Config, error) {
	b := &config.Config{
		Admin:         config.Admin{Address: f.admin, AllowedHosts: f.adminHosts, Pprof: f.adminPprof, TokenFile: f.adminToken},
		AccessLog:     config.AccessLog{Path: f.accessLog},
		Node:          config.Node{ID: f.nodeID},
		DrainTimeout:  config.Duration(f.drain),
		ShutdownDelay: config.Duration(f.delay),
	}
	if f.localConfig != "" {
		t, plugins, err := loadLocalConfig(f.localConfig, sidecar)
		if err != nil {
			return nil, &exitError{code: exitInvalid, err: fmt.Errorf("--local-config: %w", err)}
		}
		b.Telemetry, b.Plugins = t, plugins
	}
	return b, nil
}

// loadLocalTelemetry reads the telemetry section of a proxy's local
// configuration file. The control plane gives the rest of the
// configuration and the flags the proxy's own settings, so a file that
// sets anything else is refused rather than partly ignored.
func loadLocalTelemetry(file string) (*config.Telemetry, error) {
	t, _, err := loadLocalConfig(file, false)
	return t, err
}

// loadLocalConfig is loadLocalTelemetry for a proxy that may take
// plugins from the file too (a sidecar's, withPlugins; they are checked
// with the configuration the sidecar builds); then the telemetry section
// may be left out.
func loadLocalConfig(file string, withPlugins bool) (*config.Telemetry, []config.Plugin, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	doc := config.DecodeDocument(data, file)
	if len(doc.Errors) > 0 {
		return nil, nil, doc.Errors
	}
	cfg := doc.Config
	for _, s := range []struct {
		field string
		set   bool
		from  string
	}{
		{"listeners", len(cfg.Listeners) > 0, "the control plane"},
		{"virtual_hosts", len(cfg.VirtualHosts) > 0, "the control plane"},
		{"clusters", len(cfg.Clusters) > 0, "the control plane"},
		{"plugins", len(cfg.Plugins) > 0 && !withPlugins, "the control plane"},
		{"certificates", len(cfg.Certificates) > 0, "the control plane"},
		{"admin", cfg.Admin.Address != "" || len(cfg.Admin.AllowedHosts) > 0 || cfg.Admin.Pprof || cfg.Admin.TokenFile != "", "--admin"},
		{"access_log", cfg.AccessLog.Path != "" || len(cfg.AccessLog.Fields) > 0 || cfg.AccessLog.BufferEntries != 0, "--access-log"},
		{"node", cfg.Node.ID != "" || len(cfg.Node.Metadata) > 0, "--node-id"},
		{"drain_timeout", cfg.DrainTimeout != 0, "--drain-timeout"},
		{"shutdown_delay", cfg.ShutdownDelay != 0, "--shutdown-delay"},
	} {
		if s.set && withPlugins {
			return nil, nil, fmt.Errorf("%s: %s: set by the sidecar or by %s; this file gives the telemetry section and plugins only", file, s.field, s.from)
		}
		if s.set {
			return nil, nil, fmt.Errorf("%s: %s: set by %s with --etcd-endpoints; this file gives the telemetry section only", file, s.field, s.from)
		}
	}
	if cfg.Telemetry == nil && (!withPlugins || len(cfg.Plugins) == 0) {
		return nil, nil, fmt.Errorf("%s: telemetry: missing; the file gives the proxy's telemetry section", file)
	}
	var found config.Errors
	if cfg.Telemetry != nil {
		if err := cfg.ValidateTelemetry(); err != nil && !errors.As(err, &found) {
			return nil, nil, err
		}
	}
	if list := doc.Report(found); len(list) > 0 {
		return nil, nil, list
	}
	return cfg.Telemetry, cfg.Plugins, nil
}

// registerAddress is the address announced in the registry.
func (f *etcdRunFlags) registerAddress() string {
	if f.announce == "" && f.admin != "off" {
		return f.admin
	}
	return f.announce
}

// runner is a running proxy with its admin endpoints.
type runner struct {
	log     *zap.Logger
	srv     *proxy.Server
	admin   *proxy.Admin
	http    *http.Server
	drain   time.Duration
	delay   time.Duration // shutdown_delay
	adminA  net.Addr
	closers []func()
	tel     *proxyTelemetry
}

// runOptions are what startProxy needs beyond the configuration.
type runOptions struct {
	// cacheDir keeps compiled Wasm code; empty keeps it in memory.
	cacheDir string
	// blobs fetches plugin modules named only by sha256; may be nil.
	blobs func(sha256 string) ([]byte, error)
	// version names the first configuration; empty means a counter.
	version string
	// checks must pass for /ready.
	checks []proxy.ReadyCheck
	// mesh is the workload identity; nil without one.
	mesh *identity.Agent
	// policy is a sidecar's mesh_policy filter; nil for other proxies.
	policy filter.Factory
	// telemetry, when not nil, receives the proxy's telemetry once built.
	telemetry **proxyTelemetry
	// proxyOptions, when set, completes the proxy's options (a sidecar's
	// interception).
	proxyOptions func(*proxy.Options)
	// localConfig, following the control plane, is read again on SIGHUP
	// for its telemetry section.
	localConfig string
}

// startProxy applies cfg to a new proxy with a Wasm host and serves its
// admin endpoints.
func startProxy(ctx context.Context, cfg *config.Config, log *zap.Logger, o runOptions) (*runner, error) {
	tel, err := startTelemetry(cfg.Telemetry, log)
	if err != nil {
		return nil, fmt.Errorf("starting telemetry: %w", err)
	}
	met := metrics.New()
	host, err := newWasmHost(met, tel.eventLogger(log), o.cacheDir, &cfg.Node, o.blobs)
	if err != nil {
		tel.shutdown(time.Second, log)
		return nil, err
	}
	closeWasm := func() { _ = host.Close() }
	popts := proxy.Options{Logger: log, Metrics: met, Plugins: host, MeshPolicy: o.policy,
		Telemetry: tel.pipe, RED: tel.red}
	if o.proxyOptions != nil {
		o.proxyOptions(&popts)
	}
	srv := proxy.NewServer(meshOptions(popts, o.mesh))
	registerMeshMetrics(srv, o.mesh, log)
	tel.attach(srv)
	if o.telemetry != nil {
		*o.telemetry = tel
	}
	if o.mesh != nil {
		o.mesh.OnRotation(func(r identity.Rotation) { tel.pipe.CertificateRotated(r.ID, r.Serial, r.NotAfter, r.Authority) })
	}
	// A configuration with no listeners is a bootstrap: the control
	// plane's watcher applies the rest.
	if len(cfg.Listeners) > 0 {
		if err := srv.Apply(ctx, cfg, o.version); err != nil {
			_ = srv.Shutdown(context.Background())
			closeWasm()
			tel.shutdown(time.Second, log)
			return nil, fmt.Errorf("starting the proxy: %w", err)
		}
	}
	r := &runner{log: log, srv: srv, admin: proxy.NewAdmin(srv, o.checks...), drain: cfg.DrainTimeout.Or(15 * time.Second),
		delay: time.Duration(cfg.ShutdownDelay), closers: []func(){closeWasm}, tel: tel}
	adminAddr := cfg.Admin.Address
	if adminAddr == "" {
		adminAddr = config.DefaultAdminAddress
	}
	if adminAddr != "off" {
		ln, err := net.Listen("tcp", adminAddr)
		if err != nil {
			_ = srv.Shutdown(context.Background())
			return nil, fmt.Errorf("admin listener: %w", err)
		}
		r.adminA = ln.Addr()
		r.http = &http.Server{Handler: r.admin.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := r.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin listener stopped", zap.Error(err))
			}
		}()
	}
	for _, l := range cfg.Listeners {
		log.Info("listening", zap.String("listener", l.Name), zap.Stringer("address", srv.Addr(l.Name)))
	}
	if r.adminA != nil {
		log.Info("admin endpoints", zap.String("address", "http://"+r.adminA.String()))
	}
	return r, nil
}

// reload loads the file and applies it; a bad file is logged and the live
// configuration keeps serving.
func (r *runner) reload(ctx context.Context, file string) {
	cfg, err := config.LoadFile(file)
	if err != nil {
		// Apply counts the failures it returns; this one it never saw.
		r.srv.Metrics().Reloads.WithLabelValues("failure").Inc()
		r.srv.Metrics().LastReloadSuccess.Set(0)
	} else {
		err = r.srv.Apply(ctx, cfg, "")
	}
	if err != nil {
		r.log.Error("configuration rejected; the previous one keeps serving", zap.String("file", file), zap.Error(err))
		r.tel.event("config_rejected", telemetry.Error, err.Error(), telemetry.Attr{Key: "file", Value: file})
		return
	}
	r.log.Info("configuration reloaded", zap.String("file", file), zap.String("version", r.srv.Snapshot().Version))
	r.tel.event("config_applied", telemetry.Info, "configuration reloaded", revisionAttr(r.srv.Snapshot().Version))
}

// watchFile reloads on file changes and on SIGHUP until ctx is done.
func (r *runner) watchFile(ctx context.Context, file string) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	changed := make(chan struct{}, 1)
	go func() {
		if err := config.WatchFile(ctx, file, 50*time.Millisecond, func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		}); err != nil {
			r.log.Warn("not watching the configuration file; SIGHUP still reloads it", zap.Error(err))
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload(ctx, file)
		case <-changed:
			r.reload(ctx, file)
		}
	}
}

// wait blocks until ctx is done, then drains: /ready fails, listeners stop
// accepting, and requests in flight get up to the drain timeout.
func (r *runner) wait(ctx context.Context) error {
	<-ctx.Done()
	// Connections close after their responses from before /ready fails,
	// so that no one who saw it fail gets a kept-alive answer.
	r.srv.StartDraining()
	r.admin.SetDraining()
	if r.delay > 0 {
		r.log.Info("failing /ready and closing connections after their responses before the drain", zap.Duration("shutdown_delay", r.delay))
		time.Sleep(r.delay)
	}
	r.log.Info("draining", zap.Duration("timeout", r.drain))
	dctx, cancel := context.WithTimeout(context.Background(), r.drain)
	defer cancel()
	err := r.srv.Shutdown(dctx)
	if r.http != nil {
		_ = r.http.Shutdown(context.Background())
	}
	for _, c := range r.closers {
		c()
	}
	r.tel.shutdown(r.drain, r.log)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	r.log.Info("stopped")
	return nil
}
