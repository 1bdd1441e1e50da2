package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/ca"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/identity"
)

// identityFlags give `wasmgate run` a workload identity from the control
// plane's CA, for listeners and clusters with `tls: {mesh: true}`.
type identityFlags struct {
	server     string
	token      string
	tokenFile  string
	bundleFile string
	dir        string
	name       string
}

func (f *identityFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	server := os.Getenv("WASMGATE_SERVER")
	fl.StringVar(&f.server, "identity-server", server, "control plane API (https) to get the workload certificate from (or $WASMGATE_SERVER)")
	fl.StringVar(&f.token, "join-token", "", "join token for the first workload certificate (wasmgate ctl token create)")
	fl.StringVar(&f.tokenFile, "join-token-file", "", "read the join token from this file")
	fl.StringVar(&f.bundleFile, "trust-bundle-file", "", "the control plane's trust-bundle.pem, to trust its API before the first certificate")
	fl.StringVar(&f.dir, "identity-dir", filepath.Join(".wasmgate", "identity"), "directory keeping the workload key (0600), certificate and bundle across restarts")
	fl.StringVar(&f.name, "identity-name", "", "this proxy's name in `ctl ca status` (default: the host name)")
}

// enabled reports whether the proxy should run an identity agent: a join
// token was given, or a certificate was kept from an earlier run.
func (f *identityFlags) enabled() bool {
	if f.token != "" || f.tokenFile != "" {
		return true
	}
	_, err := os.Stat(filepath.Join(f.dir, "svid.pem"))
	return err == nil && f.server != ""
}

// start runs the agent until ctx ends and returns once it holds a
// certificate; nil when the proxy runs without a workload identity.
func (f *identityFlags) start(ctx context.Context, log *zap.Logger) (*identity.Agent, error) {
	if !f.enabled() {
		return nil, nil
	}
	if f.server == "" {
		return nil, &exitError{code: exitInvalid, err: errors.New("--identity-server (or $WASMGATE_SERVER) is required with --join-token")}
	}
	tok := f.token
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, &exitError{code: exitInvalid, err: fmt.Errorf("--join-token-file: %w", err)}
		}
		tok = strings.TrimSpace(string(b))
	}
	var roots []byte
	if f.bundleFile != "" {
		var err error
		if roots, err = os.ReadFile(f.bundleFile); err != nil {
			return nil, &exitError{code: exitInvalid, err: fmt.Errorf("--trust-bundle-file: %w", err)}
		}
	}
	a, err := identity.New(identity.Options{Server: f.server, BootstrapRoots: roots, JoinToken: tok, Name: f.name,
		StateDir: f.dir, Logger: log.Named("identity")})
	if err != nil {
		return nil, &exitError{code: exitInvalid, err: err}
	}
	log.Info("getting a workload certificate", zap.String("control_plane", f.server))
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := a.Start(wctx, ctx); err != nil {
		return nil, err
	}
	log.Info("workload identity", zap.String("spiffe_id", a.ID().String()), zap.String("serial", a.Serial()))
	return a, nil
}

// meshOptions gives the proxy its workload identity, if any, and its
// metrics.
func meshOptions(opts proxy.Options, a *identity.Agent) proxy.Options {
	if a != nil {
		opts.Mesh = a
	}
	return opts
}

func registerMeshMetrics(srv *proxy.Server, a *identity.Agent, log *zap.Logger) {
	if a == nil {
		return
	}
	if err := a.Register(srv.Metrics().Registry); err != nil {
		log.Warn("identity metrics", zap.Error(err))
	}
}

// meshFlags turn the control plane's certificate authority on.
type meshFlags struct {
	on       bool
	domain   string
	certFile string
	keyFile  string
	life     time.Duration
	hosts    []string
}

func (f *meshFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.on, "mesh", false, "run the mesh's certificate authority and serve the API over TLS with its certificate (needs --secret-key-file)")
	fl.StringVar(&f.domain, "trust-domain", ca.DefaultTrustDomain, "with --mesh: the SPIFFE trust domain")
	fl.StringVar(&f.certFile, "ca-cert-file", "", "with --mesh: an operator's root or intermediate to sign with (PEM; an intermediate followed by the certificates up to its root)")
	fl.StringVar(&f.keyFile, "ca-key-file", "", "with --mesh: the key of --ca-cert-file (PEM)")
	fl.DurationVar(&f.life, "certificate-lifetime", ca.DefaultLifetime, "with --mesh: lifetime of workload certificates (at least 5m)")
	fl.StringArrayVar(&f.hosts, "api-host", nil, "with --mesh: a name or address the API's certificate is for, beside localhost (repeatable)")
}

func (f *meshFlags) apply(o *controlplane.Options) error {
	if !f.on {
		if f.certFile != "" || f.keyFile != "" {
			return &exitError{code: exitInvalid, err: errors.New("--ca-cert-file and --ca-key-file need --mesh")}
		}
		return nil
	}
	o.Mesh, o.TrustDomain, o.CertificateLifetime, o.APIHosts = true, f.domain, f.life, f.hosts
	if o.APITLS != nil {
		return nil
	}
	if (f.certFile == "") != (f.keyFile == "") {
		return &exitError{code: exitInvalid, err: errors.New("--ca-cert-file and --ca-key-file go together")}
	}
	if f.certFile != "" {
		cert, err := os.ReadFile(f.certFile)
		if err != nil {
			return &exitError{code: exitInvalid, err: fmt.Errorf("--ca-cert-file: %w", err)}
		}
		key, err := os.ReadFile(f.keyFile)
		if err != nil {
			return &exitError{code: exitInvalid, err: fmt.Errorf("--ca-key-file: %w", err)}
		}
		o.CAAuthority = &ca.Authority{CertPEM: cert, KeyPEM: key}
	}
	return nil
}
