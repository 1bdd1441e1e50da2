package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/controlplane/store"
	"github.com/wasmgate/wasmgate/controlplane/watch"
	"github.com/wasmgate/wasmgate/internal/demo"
	"github.com/wasmgate/wasmgate/plugins"
)

func newUpCmd() *cobra.Command {
	var (
		dir    string
		listen string
		admin  string
		api    string
		mesh   bool
		logs   logFlags
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start everything on embedded defaults: etcd, the control plane, a proxy and a demo backend",
		Long: `up starts, in one process: an embedded etcd and the control plane's API on
it; a demo backend (two instances); and a proxy that follows the control plane.
The first time, it stores a demo configuration (written to DIR/demo.yaml too);
change it with 'wasmgate ctl apply -f DIR/demo.yaml' and the proxy serves the
change within milliseconds, without failing a request. State lives in DIR, so
a second 'up' keeps what was applied.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.build()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if mesh {
				return runUpMesh(ctx, cmd.OutOrStdout(), dir, api, log)
			}

			var backends []string
			for _, name := range []string{"demo-a", "demo-b"} {
				b, err := demo.Start(name, "127.0.0.1:0")
				if err != nil {
					return fmt.Errorf("starting the demo backend: %w", err)
				}
				defer b.Close()
				backends = append(backends, b.Addr())
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			key, err := localSecretKey(filepath.Join(dir, "secret.key"))
			if err != nil {
				return err
			}
			cp, err := controlplane.Start(ctx, controlplane.Options{
				DataDir:        filepath.Join(dir, "controlplane"),
				EtcdClientAddr: "127.0.0.1:0",
				EtcdPeerAddr:   "127.0.0.1:0",
				APIAddr:        api,
				Logger:         log.Named("controlplane"),
				SecretKey:      key,
			})
			if err != nil {
				return fmt.Errorf("starting the control plane: %w", err)
			}
			defer cp.Close()

			// The first-party filters ship in the binary; the control plane
			// stores them as content-addressed blobs, as for any plugin.
			shas := map[string]string{}
			for _, name := range plugins.Names() {
				mod, err := plugins.Module(name)
				if err != nil {
					return err
				}
				meta, err := cp.Store.PutBlob(ctx, mod)
				if err != nil {
					return fmt.Errorf("storing plugin %s: %w", name, err)
				}
				shas[name] = meta.SHA256
			}
			demoFile := filepath.Join(dir, "demo.yaml")
			seeded, err := seedDemo(ctx, cp, demoFile, demoConfig(listen, shas))
			if err != nil {
				return err
			}
			token, err := demoToken()
			if err != nil {
				return err
			}
			// The demo instances register themselves, as services do: the
			// demo clusters follow the registry, so their ports may change
			// from one run to the next.
			regs := []registry.Endpoint{
				{Cluster: "demo", ID: "demo-a", Address: backends[0]},
				{Cluster: "demo", ID: "demo-b", Address: backends[1]},
				{Cluster: "demo-b", ID: "demo-b", Address: backends[1]},
			}
			go keepRegistered(ctx, cp, regs, log)
			bootstrap := &config.Config{Admin: config.Admin{Address: admin}, AccessLog: config.AccessLog{Path: "stdout"}, Node: config.Node{ID: "up"}}
			src := etcdSource{client: cp.Client, cacheFile: defaultCacheFile(filepath.Join(dir, "proxy")), register: admin, secret: key}
			r, w, err := runFromEtcd(ctx, src, bootstrap, log, runOptions{cacheDir: filepath.Join(dir, "wasm-cache")})
			if err != nil {
				return err
			}
			if err := waitReady(ctx, w.Status, 15*time.Second); err != nil {
				return err
			}
			printUp(cmd.OutOrStdout(), r, cp, demoFile, seeded, token)
			select {
			case <-ctx.Done():
			case err := <-cp.Err():
				log.Error("the control plane stopped", zap.Error(err))
				stop()
			}
			return r.wait(ctx)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".wasmgate", "directory of the state: etcd data, token, caches")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address of the proxy's listener in the demo configuration")
	cmd.Flags().StringVar(&admin, "admin", "127.0.0.1:9901", "address of the proxy's admin endpoints")
	cmd.Flags().StringVar(&api, "api", controlplane.DefaultAPIAddr, "address of the control plane's API")
	cmd.Flags().BoolVar(&mesh, "mesh", false, "start a mesh instead: the control plane and web -> orders -> payments, each with its sidecar")
	logs.register(cmd)
	return cmd
}

// seedDemo stores the demo configuration when the control plane holds none,
// and writes it to file for the operator to edit. It reports whether it
// stored it.
func seedDemo(ctx context.Context, cp *controlplane.Server, file, doc string) (bool, error) {
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		return false, err
	}
	snap, err := cp.Store.Snapshot(ctx)
	if err != nil {
		return false, err
	}
	if len(snap.Resources) > 0 {
		return false, nil
	}
	cfg, err := config.Parse([]byte(doc), file)
	if err != nil {
		return false, fmt.Errorf("the demo configuration is invalid (a bug): %w", err)
	}
	_, err = cp.Store.Apply(ctx, store.Change{Put: resource.Split(cfg), Author: "wasmgate up", Action: "apply", Message: "demo configuration"})
	if err != nil {
		return false, fmt.Errorf("storing the demo configuration: %w", err)
	}
	return true, nil
}

// keepRegistered registers endpoints under short leases and renews them
// until ctx ends, then removes them.
func keepRegistered(ctx context.Context, cp *controlplane.Server, eps []registry.Endpoint, log *zap.Logger) {
	const ttl = 6 * time.Second
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	for {
		for _, ep := range eps {
			if _, err := registry.RegisterEndpoint(ctx, cp.Client, "", ep, ttl); err != nil && ctx.Err() == nil {
				log.Warn("registering a demo endpoint", zap.String("id", ep.ID), zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			for _, ep := range eps {
				_, _ = registry.DeregisterEndpoint(dctx, cp.Client, "", ep.Cluster, ep.ID)
			}
			cancel()
			return
		case <-tick.C:
		}
	}
}

// waitReady waits until the proxy has applied a configuration.
func waitReady(ctx context.Context, status func() watch.Status, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !status().Ready() {
		if time.Now().After(deadline) {
			return fmt.Errorf("the proxy got no configuration from the control plane within %s: %s", timeout, status().LastError)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// demoSecret signs the demo's tokens (HS256). It is a demo: anyone can
// read it here.
const demoSecret = "wasmgate-demo-secret-not-for-production"

// demoToken is a JWT for the demo's /admin/ routes, valid for a day.
func demoToken() (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "demo-admin",
		"iss": "wasmgate-demo",
		"iat": time.Now().Unix(),
		"exp": time.Now().Add(24 * time.Hour).Unix(),
	})
	t.Header["kid"] = "demo"
	return t.SignedString([]byte(demoSecret))
}

func printUp(out io.Writer, r *runner, cp *controlplane.Server, demoFile string, seeded bool, token string) {
	base := "http://" + r.srv.Addr("public").String()
	if r.srv.Addr("public") == nil {
		base = "(the stored configuration has no listener named public)"
	}
	state := "the configuration stored by an earlier run"
	if seeded {
		state = "the demo configuration, just stored"
	}
	tokenFile := filepath.Join(filepath.Dir(demoFile), "controlplane", "admin.token")
	fmt.Fprintf(out, `
wasmgate is up, serving %[6]s.

  proxy          %[1]s
  proxy admin    http://%[2]s   (/ready /metrics /config /clusters)
  control plane  %[3]s   (etcd at %[4]s)

Every route runs three Wasm filters: telemetry, encryption, authz. Try:
  curl -i %[1]s/                   balanced over two demo instances; x-trace-id from telemetry
  curl %[1]s/api/hello             prefix rewrite /api -> /
  curl -H 'x-canary: 1' %[1]s/     header match: always instance demo-b
  curl -H 'x-ssn: 078-05-1120' %[1]s/   encryption seals x-ssn before it goes upstream
  curl -i %[1]s/admin/             authz: 403 without a token
  curl -H 'authorization: Bearer %[8]s' %[1]s/admin/
  curl %[1]s/healthz               a direct response
  curl -i %[1]s/old/page           a redirect
  curl -s http://%[2]s/metrics | grep -E 'wasmgate_http_requests_total|wasm_'

Change a route: edit %[5]s, then
  export WASMGATE_SERVER=%[3]s WASMGATE_TOKEN=$(cat %[7]s)
  go run ./cmd/wasmgate ctl diff -f %[5]s
  go run ./cmd/wasmgate ctl apply -f %[5]s
  go run ./cmd/wasmgate ctl status        # which proxy runs which revision
  go run ./cmd/wasmgate ctl history

Ctrl-C drains and stops.
`, base, r.adminA, cp.APIURL(), strings.Join(cp.EtcdEndpoints(), ","), demoFile, state, tokenFile, token)
}

// demoConfig is the embedded configuration of `wasmgate up`.
func demoConfig(listen string, shas map[string]string) string {
	return fmt.Sprintf(`# The demo configuration of 'wasmgate up'. Edit it and apply it:
#   wasmgate ctl apply -f THIS_FILE
listeners:
  - name: public
    address: %[1]s
clusters:
  # The demo instances register their endpoints with the control plane.
  - name: demo
    lb_policy: round_robin
    discovery: registry
  - name: demo-b
    discovery: registry
# The first-party filters, stored by the control plane as blobs.
plugins:
  - name: telemetry
    sha256: %[2]s
    config:
      sample_rate: 1
      trace_id_header: x-trace-id
      service_name: wasmgate-demo
  - name: encryption
    sha256: %[3]s
    config:
      default: {require: none}
      keys: {demo: "%[5]s"}
      active_key: demo
      encrypt_headers: [x-ssn]
      redact_headers: [authorization, cookie]
  - name: authz
    sha256: %[4]s
    config:
      jwt:
        issuer: wasmgate-demo
        optional: true           # anonymous requests go on to the rules
        jwks: {keys: [{kty: oct, kid: demo, alg: HS256, k: "%[6]s"}]}
      rules:
        - {name: admins, action: allow, principals: [demo-admin], paths: ["/admin/*"]}
        - {name: no-admin, action: deny, paths: ["/admin/*"]}
        - {name: everyone, action: allow}
      default: deny
virtual_hosts:
  - name: default
    domains: ["*"]
    filters: [{plugin: telemetry}, {plugin: encryption}, {plugin: authz}]
    response_headers:
      set:
        - name: x-served-by
          value: wasmgate
    routes:
      - name: healthz
        match: {path: /healthz}
        direct_response: {status: 200, body: "ok\n"}
      - name: old
        match: {prefix: /old/}
        redirect: {prefix_rewrite: /new/, status: 302}
      - name: canary
        match:
          prefix: /
          headers:
            - {name: x-canary, present: true}
        cluster: demo-b
      - name: api
        match: {prefix: /api/}
        prefix_rewrite: /
        cluster: demo
      - name: default
        match: {prefix: /}
        cluster: demo
`, listen, shas["telemetry"], shas["encryption"], shas["authz"],
		base64.StdEncoding.EncodeToString([]byte("wasmgate-demo-key-32-bytes-long!")),
		base64.RawURLEncoding.EncodeToString([]byte(demoSecret)))
}

// localSecretKey reads the key that encrypts certificates' private keys,
// generating it (readable by the owner only) the first time.
func localSecretKey(file string) (*secret.Key, error) {
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(file, secret.NewKeyText(), 0o600); err != nil {
			return nil, fmt.Errorf("writing the secret key: %w", err)
		}
	}
	return secret.LoadKey(file)
}
