package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/secret"
)

// etcdFlags say how to reach an existing etcd cluster.
type etcdFlags struct {
	endpoints      []string
	cert, key, ca  string
	user, password string
}

func (f *etcdFlags) register(cmd *cobra.Command, endpointsHelp string) {
	fl := cmd.Flags()
	fl.StringSliceVar(&f.endpoints, "etcd-endpoints", nil, endpointsHelp)
	fl.StringVar(&f.cert, "etcd-cert", "", "client certificate for etcd (PEM)")
	fl.StringVar(&f.key, "etcd-key", "", "client key for etcd (PEM)")
	fl.StringVar(&f.ca, "etcd-ca", "", "CA bundle that signs etcd's certificates (PEM)")
	fl.StringVar(&f.user, "etcd-user", "", "etcd user name")
	fl.StringVar(&f.password, "etcd-password", "", "etcd password (or $WASMGATE_ETCD_PASSWORD)")
}

// tls returns the client TLS configuration, or nil when none is asked for.
func (f *etcdFlags) tls() (*tls.Config, error) {
	if f.cert == "" && f.key == "" && f.ca == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.cert != "" || f.key != "" {
		if f.cert == "" || f.key == "" {
			return nil, fmt.Errorf("--etcd-cert and --etcd-key go together")
		}
		kp, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca: no certificate in %s", f.ca)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func (f *etcdFlags) pass() string {
	if f.password != "" {
		return f.password
	}
	return os.Getenv("WASMGATE_ETCD_PASSWORD")
}

func newControlPlaneCmd() *cobra.Command {
	var (
		o            controlplane.Options
		etcd         etcdFlags
		logs         logFlags
		adminTokens  []string
		readTokens   []string
		tokenFile    string
		tlsCert      string
		tlsKey       string
		historyLimit int
		secretFile   string
		mesh         meshFlags
	)
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Run the control plane: etcd (embedded unless --etcd-endpoints) and the admin API",
		Long: `Run the control plane. By default it starts an embedded etcd with its data in
--data-dir on loopback ports; with --etcd-endpoints it uses an existing etcd
cluster instead. It keeps no state of its own.

Proxies watch etcd directly (wasmgate run --etcd-endpoints ...). Operators use
the admin API through "wasmgate ctl".

Tokens: --admin-token and --read-token (repeatable), or --token-file with one
"ROLE NAME SECRET" a line (roles: admin, register, read). With none, an admin
token is generated into DATA-DIR/admin.token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lg, err := logs.build()
			if err != nil {
				return err
			}
			defer lg.Sync()
			o.Logger = lg
			o.HistoryLimit = historyLimit
			if secretFile != "" {
				if o.SecretKey, err = secret.LoadKey(secretFile); err != nil {
					return fmt.Errorf("--secret-key-file: %w", err)
				}
			}
			o.EtcdEndpoints = etcd.endpoints
			o.EtcdUsername, o.EtcdPassword = etcd.user, etcd.pass()
			if o.EtcdTLS, err = etcd.tls(); err != nil {
				return err
			}
			for i, t := range adminTokens {
				o.Tokens = append(o.Tokens, api.Token{Name: fmt.Sprintf("admin-%d", i+1), Role: api.RoleAdmin, Secret: t})
			}
			for i, t := range readTokens {
				o.Tokens = append(o.Tokens, api.Token{Name: fmt.Sprintf("read-%d", i+1), Role: api.RoleRead, Secret: t})
			}
			if tokenFile != "" {
				data, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				toks, err := api.ParseTokens(data)
				if err != nil {
					return fmt.Errorf("--token-file %s: %w", tokenFile, err)
				}
				o.Tokens = append(o.Tokens, toks...)
			}
			for _, t := range o.Tokens {
				if len(t.Secret) < 16 {
					return fmt.Errorf("token %q is shorter than 16 characters", t.Name)
				}
			}
			if tlsCert != "" || tlsKey != "" {
				kp, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
				if err != nil {
					return fmt.Errorf("--tls-cert/--tls-key: %w", err)
				}
				o.APITLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{kp}}
			}
			if err := mesh.apply(&o); err != nil {
				return err
			}

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s, err := controlplane.Start(ctx, o)
			if err != nil {
				return err
			}
			defer s.Close()
			lg.Info("control plane ready", zap.String("api", s.APIURL()), zap.Strings("etcd", s.EtcdEndpoints()))
			select {
			case <-ctx.Done():
				lg.Info("stopping")
				return nil
			case err := <-s.Err():
				return err
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.DataDir, "data-dir", controlplane.DefaultDataDir, "directory of the embedded etcd's data and of a generated token")
	fl.StringVar(&o.EtcdClientAddr, "etcd-listen-client", controlplane.DefaultEtcdClientAddr, "embedded etcd: client host:port")
	fl.StringVar(&o.EtcdPeerAddr, "etcd-listen-peer", controlplane.DefaultEtcdPeerAddr, "embedded etcd: peer host:port")
	fl.StringVar(&o.Prefix, "prefix", "/wasmgate", "etcd key prefix")
	fl.StringVar(&o.APIAddr, "listen", controlplane.DefaultAPIAddr, `admin API host:port ("off" for none)`)
	fl.StringVar(&tlsCert, "tls-cert", "", "serve the admin API over TLS with this certificate (PEM)")
	fl.StringVar(&tlsKey, "tls-key", "", "key of --tls-cert (PEM)")
	fl.StringArrayVar(&adminTokens, "admin-token", nil, "bearer token with the admin role (repeatable)")
	fl.StringArrayVar(&readTokens, "read-token", nil, "bearer token with the read-only role (repeatable)")
	fl.StringVar(&tokenFile, "token-file", "", `file of tokens, one "ROLE NAME SECRET" a line`)
	fl.IntVar(&historyLimit, "history-limit", 1000, "number of changes the history keeps")
	fl.StringVar(&secretFile, "secret-key-file", "", "file of the base64 32-byte key that encrypts certificates' private keys in etcd (needed to store certificates)")
	etcd.register(cmd, "use this existing etcd cluster (comma-separated client URLs) instead of an embedded one")
	logs.register(cmd)
	mesh.register(cmd)
	return cmd
}
