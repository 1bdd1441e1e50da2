package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/mesh/sidecar"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
	"github.com/wasmgate/wasmgate/proxy/identity"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// sidecarFlags are `run --sidecar`'s: the settings of sidecar.Settings,
// over a `sidecar:` section of the -c file when one is given.
type sidecarFlags struct {
	on       bool
	s        sidecar.Settings
	tcpCalls []string
	ttl      time.Duration
	// health and healthEvery are --health-check and
	// --health-check-interval.
	health      string
	healthEvery time.Duration
}

func (f *sidecarFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.on, "sidecar", false, "run beside one service of the mesh: inbound mTLS with its policy, outbound calls by name (needs --join-token; -c may give a `sidecar:` section)")
	fl.StringVar(&f.s.Service, "service", "", "with --sidecar: the service's name")
	fl.StringVar(&f.s.Namespace, "namespace", "", "with --sidecar: the service's namespace (default \"default\")")
	fl.StringVar(&f.s.ServiceAccount, "service-account", "", "with --sidecar: the service account of the join token (default: the service)")
	fl.IntVar(&f.s.AppPort, "app-port", 0, "with --sidecar: the app's port on 127.0.0.1")
	fl.StringVar(&f.s.Protocol, "protocol", "", "with --sidecar: what the app speaks: http, http2, grpc or tcp (opaque bytes; default http)")
	fl.StringVar(&f.s.Version, "version", "", "with --sidecar: the app's version (\"v2\"), registered with its address, which service routes split calls by")
	fl.StringVar(&f.s.Inbound, "inbound", "", "with --sidecar: host:port of the inbound listener for peers (default "+sidecar.DefaultInbound+")")
	fl.StringVar((*string)(&f.s.InboundMode), "inbound-mode", "", "with --sidecar: strict (the default: mesh mTLS only) or permissive (plain text too, for a migration); the service's peer_authentication wins")
	fl.StringVar(&f.s.Announce, "announce", "", "with --sidecar: the inbound address registered for peers (default --inbound)")
	fl.StringVar(&f.s.Outbound, "outbound", "", "with --sidecar: host:port the app sends its calls to (default "+sidecar.DefaultOutbound+")")
	fl.StringVar(&f.s.OutboundPolicy, "outbound-policy", "", "with --sidecar: registry_only (default) or allow_any, for names outside the mesh")
	fl.StringVar(&f.s.HopProtocol, "hop-protocol", "", "with --sidecar: how calls cross to the peers' sidecars: http2 (default: every call in HTTP/2) or downstream (each in the protocol the app used)")
	fl.IntVar(&f.s.Concurrency, "concurrency", 0, "with --sidecar: how many threads run the sidecar's code at once (GOMAXPROCS; default 1, or $GOMAXPROCS when set)")
	fl.StringSliceVar(&f.s.Calls, "calls", nil, "with --sidecar: the services the app calls (comma-separated: orders,payments.shop), or '*' for every service of the mesh, as it comes and goes")
	fl.StringSliceVar(&f.tcpCalls, "tcp-calls", nil, "with --sidecar: the services of protocol tcp the app calls: db=15432 (a local port for it, on 127.0.0.1), db=HOST:PORT, or db (reached through interception only)")
	fl.StringSliceVar(&f.s.InboundFilters, "inbound-filters", nil, "with --sidecar: Wasm plugins of --local-config, by name, that every request from a peer passes through after the mesh policy (comma-separated, in order)")
	fl.StringSliceVar(&f.s.OutboundFilters, "outbound-filters", nil, "with --sidecar: Wasm plugins of --local-config, by name, that every call of the app passes through (comma-separated, in order)")
	fl.StringSliceVar(&f.s.InboundNetworkFilters, "inbound-network-filters", nil, "with --sidecar, for an app of protocol tcp: Wasm plugins of --local-config, by name, that run as network filters on every connection from a peer after the mesh policy (comma-separated, in order)")
	fl.StringSliceVar(&f.s.OutboundNetworkFilters, "outbound-network-filters", nil, "with --sidecar: Wasm plugins of --local-config, by name, that run as network filters on every connection of the app to a TCP service, and on those passed outside the mesh (comma-separated, in order)")
	fl.DurationVar((*time.Duration)(&f.s.ProtocolDetectionTimeout), "protocol-detection-timeout", 0, "with --sidecar: how long an intercepted connection bound outside the mesh may stay silent before it is taken for a protocol whose server speaks first (default 100ms)")
	fl.StringVar(&f.s.DNS, "dns", "", "with --sidecar: answer DNS at this address (127.0.0.1:15053; UDP and TCP): the names of the services the app calls with their virtual addresses, other names from the host's resolvers; `sidecar iptables --dns-port` sends the app's DNS there")
	fl.DurationVar(&f.ttl, "registration-ttl", 10*time.Second, "with --sidecar: lease of the inbound address in the registry")
	fl.StringVar(&f.health, "health-check", "", "with --sidecar: probe the app, and register its address only while it is healthy: the path of an HTTP GET (/healthz; 2xx or 3xx is healthy), tcp (a connection it accepts), or grpc or grpc:SERVICE (the app's gRPC health service says SERVING); -c's health_check sets thresholds")
	fl.DurationVar(&f.healthEvery, "health-check-interval", 0, "with --sidecar and --health-check: time between probes (default 5s)")
}

// settings merges the file's `sidecar:` section (if any) with the flags,
// which win, and validates the result.
func (f *sidecarFlags) settings(file string) (sidecar.Settings, error) {
	var s sidecar.Settings
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return s, err
		}
		var doc struct {
			Sidecar sidecar.Settings `yaml:"sidecar"`
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&doc); err != nil {
			return s, fmt.Errorf("%s: %w", file, err)
		}
		s = doc.Sidecar
	}
	o := f.s
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&s.Service, o.Service)
	set(&s.Namespace, o.Namespace)
	set(&s.ServiceAccount, o.ServiceAccount)
	set(&s.Protocol, o.Protocol)
	set(&s.Version, o.Version)
	set(&s.Inbound, o.Inbound)
	set((*string)(&s.InboundMode), string(o.InboundMode))
	set(&s.Announce, o.Announce)
	set(&s.Outbound, o.Outbound)
	set(&s.OutboundPolicy, o.OutboundPolicy)
	set(&s.HopProtocol, o.HopProtocol)
	set(&s.DNS, o.DNS)
	if o.AppPort != 0 {
		s.AppPort = o.AppPort
	}
	if o.Concurrency != 0 {
		s.Concurrency = o.Concurrency
	}
	if o.ProtocolDetectionTimeout != 0 {
		s.ProtocolDetectionTimeout = o.ProtocolDetectionTimeout
	}
	if len(o.Calls) > 0 {
		s.Calls = o.Calls
	}
	if len(o.InboundFilters) > 0 {
		s.InboundFilters = o.InboundFilters
	}
	if len(o.OutboundFilters) > 0 {
		s.OutboundFilters = o.OutboundFilters
	}
	if len(o.InboundNetworkFilters) > 0 {
		s.InboundNetworkFilters = o.InboundNetworkFilters
	}
	if len(o.OutboundNetworkFilters) > 0 {
		s.OutboundNetworkFilters = o.OutboundNetworkFilters
	}
	if len(f.tcpCalls) > 0 {
		calls, err := sidecar.ParseTCPCalls(f.tcpCalls)
		if err != nil {
			return s, fmt.Errorf("--tcp-calls: %w", err)
		}
		s.TCPCalls = calls
	}
	if f.health != "" {
		h, err := sidecar.ParseHealthCheck(f.health)
		if err != nil {
			return s, fmt.Errorf("--health-check: %w", err)
		}
		if s.HealthCheck != nil {
			// The flag says how to probe; the file's interval, timeout
			// and thresholds stay.
			s.HealthCheck.HTTP, s.HealthCheck.TCP, s.HealthCheck.GRPC, s.HealthCheck.GRPCService = h.HTTP, h.TCP, h.GRPC, h.GRPCService
		} else {
			s.HealthCheck = h
		}
	}
	if f.healthEvery != 0 {
		if s.HealthCheck == nil {
			return s, errors.New("--health-check-interval: there is no health check (--health-check)")
		}
		s.HealthCheck.Interval = config.Duration(f.healthEvery)
	}
	s.Normalize()
	return s, s.Validate()
}

// runSidecar serves sidecar mode until ctx ends: the workload identity
// from the control plane, discovery over its API with that identity, the
// inbound address registered under a lease (through the API with that
// identity, or in etcd directly when --etcd-endpoints is given), and a
// drain that deregisters first.
func runSidecar(ctx context.Context, f *sidecarFlags, file string, mesh *identity.Agent, idf *identityFlags,
	etcd *etcdFlags, ef *etcdRunFlags, cacheDir string, log *zap.Logger) error {
	s, err := f.settings(file)
	if err != nil {
		return &exitError{code: exitInvalid, err: fmt.Errorf("invalid sidecar settings:\n%w", err)}
	}
	if mesh == nil {
		return &exitError{code: exitInvalid, err: errors.New("--sidecar needs a workload identity: --identity-server and --join-token (wasmgate ctl token create)")}
	}
	if ns, sa := spiffeParts(mesh.ID().String()); ns != s.Namespace || sa != s.ServiceAccount {
		return &exitError{code: exitInvalid, err: fmt.Errorf("the workload identity %s is not of namespace %q and service account %q", mesh.ID(), s.Namespace, s.ServiceAccount)}
	}
	// The sidecar's threads: its setting, else $GOMAXPROCS, else one.
	if s.Concurrency != 0 || os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(s.Threads())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	guard := policy.NewGuard(s.Namespace, s.Service)
	base, err := ef.bootstrap(true)
	if err != nil {
		return &exitError{code: exitInvalid, err: err}
	}
	if err := checkSidecarConfig(&s, base, mesh.ID().TrustDomain().Name()); err != nil {
		return &exitError{code: exitInvalid, err: fmt.Errorf("invalid sidecar configuration:\n%w", err)}
	}
	tcp, err := sidecar.NewTCP(&s, mesh, guard, log.Named("sidecar"))
	if err != nil {
		return err
	}
	var tel *proxyTelemetry
	r, err := startProxy(ctx, base, log, runOptions{cacheDir: cacheDir, mesh: mesh, blobs: meshBlobs(idf.server, mesh),
		policy: native.NewMeshPolicy(guard, log.Named("policy")), telemetry: &tel, proxyOptions: tcp.ProxyOptions})
	if err != nil {
		return err
	}
	var reload chan os.Signal
	if ef.localConfig != "" {
		// Before the first configuration: SIGHUP must not end the
		// process once the proxy serves.
		reload = make(chan os.Signal, 1)
		signal.Notify(reload, syscall.SIGHUP)
		defer signal.Stop(reload)
	}
	src := (&discovery.Client{URL: strings.TrimSuffix(idf.server, "/") + api.DiscoveryPath, HTTP: mesh.HTTPClient()}).Watch(s.Interest())
	defer src.Close()
	sc, err := sidecar.New(sidecar.Options{Settings: s, TrustDomain: mesh.ID().TrustDomain().Name(), Proxy: r.srv, Guard: guard, Identity: mesh,
		Source: src, Base: base, TCP: tcp, Logger: log.Named("sidecar")})
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- sc.Run(ctx) }()
	if reload != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-reload:
					reloadSidecarLocal(ctx, ef.localConfig, &s, base, mesh.ID().TrustDomain().Name(), sc, tel, log)
				}
			}
		}()
	}
	select {
	case <-sc.Ready():
	case err := <-runErr:
		cancel()
		_ = r.wait(ctx)
		return err
	case <-ctx.Done():
		return r.wait(ctx)
	}
	// The policies are in force: a TCP app's inbound may open.
	if err := tcp.Start(tel.pipe, r.srv); err != nil {
		cancel()
		_ = r.wait(ctx)
		return &exitError{code: exitInvalid, err: err}
	}
	defer tcp.Close()
	log.Info("sidecar serving", zap.String("service", s.Name()), zap.String("spiffe_id", mesh.ID().String()),
		zap.String("inbound", s.Inbound), zap.String("outbound", s.Outbound), zap.Strings("calls", s.Targets()), zap.String("dns", s.DNS),
		zap.Int("threads", runtime.GOMAXPROCS(0)))

	var newReg func() (sidecar.Registrar, error)
	if len(etcd.endpoints) == 0 {
		// Through the control plane's API, with the workload certificate:
		// the sidecar holds no credentials of etcd.
		client := &api.Client{Server: idf.server, HTTP: mesh.HTTPClient()}
		newReg = func() (sidecar.Registrar, error) {
			return api.NewRegistration(client, s.Endpoint(), f.ttl, log.Named("registration"))
		}
	} else {
		cli, err := etcd.client()
		if err != nil {
			return err
		}
		defer cli.Close()
		newReg = func() (sidecar.Registrar, error) {
			return discovery.NewRegistration(cli, ef.prefix, s.Endpoint(), f.ttl, log.Named("registration"))
		}
	}
	// A registration that cannot be made is an invalid endpoint.
	if _, err := newReg(); err != nil {
		return &exitError{code: exitInvalid, err: err}
	}
	var health <-chan bool
	if s.HealthCheck != nil {
		healthy := prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmgate_sidecar_app_healthy",
			Help: "1 while the app passes its health checks and its address is registered; 0 while it starts or fails them."})
		r.srv.Metrics().Registry.MustRegister(healthy)
		health = sidecar.WatchHealth(ctx, &s, log.Named("health"), func(ok bool) {
			if ok {
				healthy.Set(1)
			} else {
				healthy.Set(0)
			}
		})
	}
	regDone := make(chan struct{})
	go func() {
		defer close(regDone)
		if err := sidecar.RegisterWhileHealthy(ctx, health, newReg); err != nil {
			log.Error("the inbound address is not registered", zap.Error(err))
		}
	}()
	select {
	case <-ctx.Done():
	case err := <-runErr:
		log.Error("sidecar stopped following the control plane", zap.Error(err))
		cancel()
	}
	// Deregistered before the drain, so that callers stop sending first.
	<-regDone
	return r.wait(ctx)
}

// spiffeParts returns the namespace and service account of a workload's
// SPIFFE ID.
func spiffeParts(id string) (namespace, serviceAccount string) {
	_, ns, sa, _ := policy.ParseSPIFFE(id)
	return ns, sa
}

// checkSidecarConfig checks, before the sidecar starts, what its
// configurations are made of: its filters name plugins of --local-config,
// and a configuration built with them (as yet without endpoints) is
// valid, the plugins' own fields included.
func checkSidecarConfig(s *sidecar.Settings, base *config.Config, trustDomain string) error {
	if err := s.CheckFilters(base.Plugins); err != nil {
		return err
	}
	cfg := sidecar.Build(s, sidecar.State{}, trustDomain, "")
	sidecar.WithBase(cfg, base)
	cfg.Normalize()
	return cfg.Validate()
}

// reloadSidecarLocal reads a sidecar's --local-config again (at SIGHUP)
// and applies a configuration with its plugins at once (a plugin whose
// module or VM settings changed gets a new VM; one whose configuration
// alone changed keeps its VM with a new root context); then its
// telemetry goes in force, sinks whose settings did not change keeping
// their queues. A file that does not load, with which the sidecar's
// configuration would not be valid, or whose plugins the proxy refuses,
// is logged and a config_rejected event, and what runs stays.
func reloadSidecarLocal(ctx context.Context, file string, s *sidecar.Settings, boot *config.Config, trustDomain string, sc *sidecar.Sidecar, tel *proxyTelemetry, log *zap.Logger) {
	next := *boot
	t, plugins, err := loadLocalConfig(file, true)
	if err == nil {
		next.Telemetry, next.Plugins = t, plugins
		err = checkSidecarConfig(s, &next, trustDomain)
	}
	if err == nil {
		err = sc.Rebase(ctx, &next)
	}
	if err == nil && tel != nil {
		err = tel.pipe.Reconfigure(t)
	}
	if err != nil {
		log.Error("--local-config rejected; the running telemetry and plugins stay", zap.String("file", file), zap.Error(err))
		tel.event("config_rejected", telemetry.Error, err.Error(), telemetry.Attr{Key: "file", Value: file})
		return
	}
	log.Info("local configuration reloaded", zap.String("file", file), zap.Int("plugins", len(plugins)))
	tel.event("config_applied", telemetry.Info, "local configuration reloaded", telemetry.Attr{Key: "file", Value: file})
}

// meshBlobs fetches the module of a Wasm plugin of the control plane
// through its API, with the workload certificate, and checks its digest.
func meshBlobs(server string, mesh *identity.Agent) func(sha string) ([]byte, error) {
	return func(sha string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+"/v1/blobs/"+sha, nil)
		if err != nil {
			return nil, err
		}
		resp, err := mesh.HTTPClient().Do(req)
		if err != nil {
			return nil, fmt.Errorf("module %s from the control plane: %w", sha, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxModuleBytes+1))
		if err != nil {
			return nil, fmt.Errorf("module %s from the control plane: %w", sha, err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("module %s from the control plane: %s: %s", sha, resp.Status, strings.TrimSpace(string(b)))
		}
		if len(b) > maxModuleBytes {
			return nil, fmt.Errorf("module %s from the control plane: larger than %d bytes", sha, maxModuleBytes)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != sha {
			return nil, fmt.Errorf("module %s from the control plane: its digest is %x", sha, sum)
		}
		return b, nil
	}
}

// maxModuleBytes bounds a module fetched from the control plane.
const maxModuleBytes = 256 << 20
