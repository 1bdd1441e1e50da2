package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
	"github.com/wasmgate/wasmgate/proxy/identity"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// LocalOptions configure a sidecar run inside this process with a proxy
// of its own: `wasmgate up --mesh` runs several so, and tests do.
type LocalOptions struct {
	// Settings are the sidecar's; they are normalised here. Inbound and
	// Outbound may have port 0: the proxy binds them to ports the kernel
	// picks as it makes the sockets, so no other process can take a port
	// between its pick and the bind, and an inbound of port 0 with no
	// Announce announces its bound address. Local.Settings has the
	// addresses as bound.
	Settings Settings
	// ControlPlane is the API's https URL; Roots its trust bundle (PEM);
	// JoinToken gets the first certificate.
	ControlPlane string
	Roots        []byte
	JoinToken    string
	// The inbound address is registered through the control plane's API
	// with the workload certificate; or, with Etcd, in that etcd under
	// Prefix ("" means /wasmgate). TTL is the lease (zero: 10 s).
	// Unregistered leaves it out of the registry: a sidecar no one calls,
	// such as a gateway's.
	Etcd         *clientv3.Client
	Prefix       string
	TTL          time.Duration
	Unregistered bool
	// Base holds the proxy-local settings copied into every configuration
	// the sidecar applies, as Options.Base; nil means none.
	Base *config.Config
	// Telemetry, when set, takes the sidecar's records (access, policy
	// decisions, flows) and its certificate_rotated events, to the sinks
	// Base.Telemetry configures. Sidecars may share one pipeline with the
	// same Base.Telemetry.
	Telemetry *telemetry.Pipeline
	// Logger may be nil.
	Logger *zap.Logger
}

// Local is a running in-process sidecar.
type Local struct {
	Settings Settings
	Agent    *identity.Agent
	Server   *proxy.Server
	Guard    *policy.Guard
	// TCP relays the app's opaque TCP.
	TCP *TCP

	cancel  context.CancelFunc
	runDone chan struct{}
	regDone chan struct{}
}

// StartLocal gets a workload certificate, follows discovery over the
// control plane's API with it, and returns once the proxy serves the
// first configuration and the inbound address is registered. ctx bounds
// the start only.
func StartLocal(ctx context.Context, o LocalOptions) (*Local, error) {
	s := o.Settings
	s.Normalize()
	if err := s.validate(true); err != nil {
		return nil, err
	}
	if len(s.InboundFilters)+len(s.OutboundFilters)+len(s.InboundNetworkFilters)+len(s.OutboundNetworkFilters) > 0 {
		return nil, errors.New("sidecar: an in-process sidecar runs no Wasm filters; run it as `wasmgate run --sidecar`")
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("sidecar", s.Name()))
	runCtx, cancel := context.WithCancel(context.Background())
	l := &Local{Settings: s, cancel: cancel, runDone: make(chan struct{}), regDone: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			cancel()
		}
	}()
	agent, err := identity.New(identity.Options{Server: o.ControlPlane, BootstrapRoots: o.Roots, JoinToken: o.JoinToken,
		Name: s.Service + "-" + s.Namespace, Logger: log.Named("identity")})
	if err != nil {
		return nil, err
	}
	if err := agent.Start(ctx, runCtx); err != nil {
		return nil, err
	}
	l.Agent = agent
	l.Guard = policy.NewGuard(s.Namespace, s.Service)
	if l.TCP, err = NewTCP(&s, agent, l.Guard, log); err != nil {
		return nil, err
	}
	if tel := o.Telemetry; tel != nil {
		agent.OnRotation(func(r identity.Rotation) { tel.CertificateRotated(r.ID, r.Serial, r.NotAfter, r.Authority) })
	}
	popts := proxy.Options{Logger: log.Named("proxy"), Mesh: agent, MeshPolicy: native.NewMeshPolicy(l.Guard, log.Named("policy")),
		Telemetry: o.Telemetry}
	l.TCP.ProxyOptions(&popts)
	l.Server = proxy.NewServer(popts)
	src := (&discovery.Client{URL: strings.TrimSuffix(o.ControlPlane, "/") + api.DiscoveryPath, HTTP: agent.HTTPClient()}).Watch(s.Interest())
	sc, err := New(Options{Settings: s, TrustDomain: agent.ID().TrustDomain().Name(), Proxy: l.Server, Guard: l.Guard, Identity: agent,
		Source: src, Base: o.Base, TCP: l.TCP, Logger: log})
	if err != nil {
		return nil, err
	}
	runErr := make(chan error, 1)
	go func() {
		defer close(l.runDone)
		defer src.Close()
		runErr <- sc.Run(runCtx)
	}()
	select {
	case <-sc.Ready():
	case err := <-runErr:
		return nil, err
	case <-ctx.Done():
		return nil, fmt.Errorf("sidecar %s: no configuration: %w", s.Name(), ctx.Err())
	}
	// The policies are in force: the TCP inbound may open.
	if err := l.TCP.Start(o.Telemetry, l.Server); err != nil {
		return nil, err
	}
	defer func() {
		if !ok {
			l.TCP.Close()
		}
	}()
	// The listeners keep their sockets across reloads: the addresses
	// bound now are the sidecar's for its life.
	in := l.Server.Addr(InboundListener)
	if s.Protocol == ProtocolTCP {
		in = l.TCP.InboundAddr()
	}
	s.Inbound, s.Announce = boundAddr(s.Inbound, in), boundAddr(s.Announce, in)
	s.Outbound = boundAddr(s.Outbound, l.Server.Addr(OutboundListener))
	l.Settings = s
	type registration interface {
		Run(context.Context) error
		Registered() <-chan struct{}
	}
	newReg := func() (registration, error) {
		if o.Etcd != nil {
			return discovery.NewRegistration(o.Etcd, o.Prefix, s.Endpoint(), o.TTL, log.Named("registration"))
		}
		client := &api.Client{Server: o.ControlPlane, HTTP: agent.HTTPClient()}
		return api.NewRegistration(client, s.Endpoint(), o.TTL, log.Named("registration"))
	}
	switch {
	case o.Unregistered:
		close(l.regDone)
	case s.HealthCheck != nil:
		// Registered while the app is healthy, which may be long after
		// the sidecar serves: not waited for.
		if _, err := newReg(); err != nil {
			return nil, err
		}
		health := WatchHealth(runCtx, &s, log.Named("health"), nil)
		go func() {
			defer close(l.regDone)
			err := RegisterWhileHealthy(runCtx, health, func() (Registrar, error) { return newReg() })
			if err != nil {
				log.Error("the inbound address is not registered", zap.Error(err))
			}
		}()
	default:
		reg, err := newReg()
		if err != nil {
			return nil, err
		}
		regErr := make(chan error, 1)
		go func() {
			defer close(l.regDone)
			regErr <- reg.Run(runCtx)
		}()
		select {
		case <-reg.Registered():
		case err := <-regErr:
			return nil, fmt.Errorf("sidecar %s: not registered: %w", s.Name(), err)
		case <-ctx.Done():
			return nil, fmt.Errorf("sidecar %s: not registered: %w", s.Name(), ctx.Err())
		}
	}
	ok = true
	return l, nil
}

// boundAddr is addr with the port of the socket bound for it when addr
// leaves the port to the kernel (port 0); addr otherwise, its host kept
// as given.
func boundAddr(addr string, bound net.Addr) string {
	host, port, err := net.SplitHostPort(addr)
	a, ok := bound.(*net.TCPAddr)
	if err != nil || port != "0" || !ok {
		return addr
	}
	return net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// Close deregisters the inbound address, then drains the proxy for up to
// drain.
func (l *Local) Close(drain time.Duration) error {
	l.cancel()
	<-l.regDone
	<-l.runDone
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	defer l.TCP.Close()
	if err := l.Server.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
