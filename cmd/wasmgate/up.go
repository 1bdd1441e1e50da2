package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
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
	"github.com/wasmgate/wasmgate/proxy"
)

func newUpCmd() *cobra.Command {
	var (
		dir       string
		listen    string
		admin     string
		api       string
		etcdAddr  string
		accessLog string
		mesh      bool
		logs      logFlags
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start everything on embedded defaults: etcd, the control plane, a proxy and a demo backend",
		Long: `up starts, in one process: an embedded etcd (client port 127.0.0.1:2379) and
the control plane's API on it (127.0.0.1:9900); a demo backend (two instances);
and a proxy that follows the control plane (listener 127.0.0.1:8080, admin
127.0.0.1:9901). It prints what to try once every demo route answers.

The first time, it stores a demo configuration (written to DIR/demo.yaml too);
change it with 'wasmgate ctl apply -f DIR/demo.yaml' and the proxy serves the
change within milliseconds, without failing a request. State lives in DIR, so
a second 'up' keeps what was applied; one 'up' at a time runs in a DIR. The
access log goes to DIR/access.log.

Other proxies can follow the same control plane:
  wasmgate run --etcd-endpoints http://127.0.0.1:2379 --admin 127.0.0.1:9902`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			log, err := logs.build()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			defer func() {
				// Interrupted while starting: stopped as asked.
				if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
					log.Info("interrupted while starting; stopped")
					err = nil
				}
			}()
			// Ctrl-C while starting stops up even if a part does not heed
			// it (an embedded etcd waiting on a lock of its data does not).
			started := make(chan struct{})
			defer closeOnce(started)
			go func() {
				select {
				case <-started:
					return
				case <-ctx.Done():
				}
				select {
				case <-started:
				case <-time.After(5 * time.Second):
					fmt.Fprintln(cmd.ErrOrStderr(), "wasmgate: interrupted while starting, and a part did not stop within 5s; exiting")
					os.Exit(130)
				}
			}()

			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			// One up per folder: a second one would wait on the first's
			// etcd data for ever.
			lock, err := lockUp(dir)
			if err != nil {
				return err
			}
			defer lock.release()
			if mesh {
				closeOnce(started)
				return runUpMesh(ctx, cmd.OutOrStdout(), dir, api, log)
			}
			ports := [][2]string{{"--etcd", etcdAddr}, {"--api", api}, {"--admin", admin}}
			if _, err := os.Stat(filepath.Join(dir, "controlplane", "etcd")); errors.Is(err, fs.ErrNotExist) {
				// The first start stores the demo, which listens on --listen;
				// later ones serve what is stored.
				ports = append(ports, [2]string{"--listen", listen})
			}
			if err := checkFreePorts(ports); err != nil {
				return err
			}
			switch accessLog {
			case "":
				accessLog = filepath.Join(dir, "access.log")
			case "off":
				accessLog = ""
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
			key, err := localSecretKey(filepath.Join(dir, "secret.key"))
			if err != nil {
				return err
			}
			cp, err := controlplane.Start(ctx, controlplane.Options{
				DataDir:        filepath.Join(dir, "controlplane"),
				EtcdClientAddr: etcdAddr,
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
			demoDoc := demoConfig(listen, shas)
			seeded, err := seedDemo(ctx, cp, demoFile, demoDoc)
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
			// /ready fails until every demo route answers, as the banner
			// waits for.
			var served atomic.Bool
			ready := func() (bool, string) {
				if served.Load() {
					return true, ""
				}
				return false, "the demo routes do not all answer yet"
			}
			bootstrap := &config.Config{Admin: config.Admin{Address: admin}, AccessLog: config.AccessLog{Path: accessLog}, Node: config.Node{ID: "up"}}
			src := etcdSource{client: cp.Client, cacheFile: defaultCacheFile(filepath.Join(dir, "proxy")), register: admin, secret: key}
			r, w, err := runFromEtcd(ctx, src, bootstrap, log, runOptions{cacheDir: filepath.Join(dir, "wasm-cache"), checks: []proxy.ReadyCheck{ready}})
			if err != nil {
				return err
			}
			etcdURLs := strings.Join(cp.EtcdEndpoints(), ",")
			if err := lock.record("", "http://"+r.adminA.String(), cp.APIURL(), etcdURLs); err != nil {
				return err
			}
			if err := waitReady(ctx, w.Status, log); err != nil {
				return err
			}
			isDemo, err := waitServed(ctx, cp, r, demoDoc, token, 2*time.Minute)
			if err != nil {
				return err
			}
			served.Store(true)
			closeOnce(started)
			base := proxyURL(r)
			if err := lock.record(base, "http://"+r.adminA.String(), cp.APIURL(), etcdURLs); err != nil {
				return err
			}
			printUp(cmd.OutOrStdout(), upBanner{base: base, admin: r.adminA.String(), api: cp.APIURL(), etcd: strings.Join(cp.EtcdEndpoints(), ","),
				dir: dir, demoFile: demoFile, accessLog: accessLog, seeded: seeded, isDemo: isDemo, token: token})
			select {
			case <-ctx.Done():
			case err := <-cp.Err():
				log.Error("the control plane stopped", zap.Error(err))
				stop()
			}
			return r.wait(ctx)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".wasmgate", "folder of the state: etcd data, tokens, caches, the access log")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address of the proxy's listener in the demo configuration")
	cmd.Flags().StringVar(&admin, "admin", "127.0.0.1:9901", "address of the proxy's admin endpoints")
	cmd.Flags().StringVar(&api, "api", controlplane.DefaultAPIAddr, "address of the control plane's API")
	cmd.Flags().StringVar(&etcdAddr, "etcd", controlplane.DefaultEtcdClientAddr, "client address of the embedded etcd, which 'run --etcd-endpoints http://ADDRESS' follows (port 0: any free port)")
	cmd.Flags().StringVar(&accessLog, "access-log", "", `access log: a file, "stdout", or "off" (default DIR/access.log)`)
	cmd.Flags().BoolVar(&mesh, "mesh", false, "start a mesh instead: the control plane and web -> orders -> payments, each with its sidecar")
	logs.register(cmd)
	return cmd
}

// closeOnce closes c unless it is closed.
func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// checkFreePorts fails with a clear message when an address a flag names
// is taken, before anything starts on it.
func checkFreePorts(addrs [][2]string) error {
	for _, a := range addrs {
		if a[1] == "off" {
			continue
		}
		ln, err := net.Listen("tcp", a[1])
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%s %s: the address is in use by another process; stop it, or choose another address with %s (port 0: any free port)", a[0], a[1], a[0])
			}
			return fmt.Errorf("%s %s: %w", a[0], a[1], err)
		}
		ln.Close()
	}
	return nil
}

// proxyURL is the base URL of the proxy's public listener.
func proxyURL(r *runner) string {
	a, ok := r.srv.Addr("public").(*net.TCPAddr)
	if !ok {
		return ""
	}
	ip := a.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return "http://" + net.JoinHostPort(ip.String(), strconv.Itoa(a.Port))
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

// waitReady waits until the proxy has applied a configuration, saying
// every 10s what it waits for: the first start compiles the Wasm filters,
// which takes a while on a busy machine.
func waitReady(ctx context.Context, status func() watch.Status, log *zap.Logger) error {
	start := time.Now()
	next := start.Add(10 * time.Second)
	for !status().Ready() {
		if time.Now().After(next) {
			next = next.Add(10 * time.Second)
			why := status().LastError
			if why == "" {
				why = "compiling the Wasm filters (cached in the state folder for the next start)"
			}
			log.Info("waiting for the proxy's first configuration", zap.Duration("waited", time.Since(start).Round(time.Second)), zap.String("doing", why))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// demoProbe is a request the demo configuration serves, and what it
// answers once its route and the cluster behind it are ready.
type demoProbe struct {
	path   string
	header [2]string
	status int
	// instances the answers must come from, all of them, over repeated
	// requests (the round robin); empty for any.
	instances []string
}

// demoProbes are the banner's examples, each with what it answers.
func demoProbes(token string) []demoProbe {
	return []demoProbe{
		{path: "/", status: 200, instances: []string{"demo-a", "demo-b"}},
		{path: "/api/hello", status: 200},
		{path: "/", header: [2]string{"x-canary", "1"}, status: 200, instances: []string{"demo-b"}},
		{path: "/healthz", status: 200},
		{path: "/old/page", status: 302},
		{path: "/admin/", status: 403},
		{path: "/admin/", header: [2]string{"authorization", "Bearer " + token}, status: 200},
	}
}

// waitServed returns once the proxy serves what the banner will offer.
// When the live configuration is the demo's, every probe of demoProbes
// must pass; otherwise every cluster of the live configuration must have
// an endpoint, for up to timeout, after which up starts anyway and says
// which has none.
func waitServed(ctx context.Context, cp *controlplane.Server, r *runner, demoDoc, token string, timeout time.Duration) (isDemo bool, err error) {
	isDemo, err = liveIsDemo(ctx, cp, demoDoc)
	if err != nil {
		return false, err
	}
	deadline := time.Now().Add(timeout)
	base := proxyURL(r)
	var check func() string
	if isDemo && base != "" {
		check = demoChecker(base, demoProbes(token))
	} else {
		check = func() string {
			snap := r.srv.Snapshot()
			if snap == nil {
				return "no configuration yet"
			}
			for _, c := range snap.Clusters {
				if len(c.Endpoints()) == 0 {
					return fmt.Sprintf("cluster %q has no endpoint", c.Name)
				}
			}
			return ""
		}
	}
	for {
		problem := check()
		if problem == "" {
			return isDemo, nil
		}
		if time.Now().After(deadline) {
			if isDemo {
				return true, fmt.Errorf("the demo routes do not all answer after %s: %s", timeout, problem)
			}
			r.log.Warn("starting although the configuration is not all served", zap.String("reason", problem))
			return false, nil
		}
		select {
		case <-ctx.Done():
			return isDemo, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// demoChecker returns a function that runs the probes not yet passed and
// says what fails, or "" once each has passed.
func demoChecker(base string, probes []demoProbe) func() string {
	client := &http.Client{
		Timeout:       2 * time.Second,
		Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	passed := make([]bool, len(probes))
	seen := make([]map[string]bool, len(probes))
	for i := range seen {
		seen[i] = map[string]bool{}
	}
	return func() string {
		for i, p := range probes {
			if passed[i] {
				continue
			}
			what := "GET " + p.path
			if p.header[0] != "" {
				what += " with " + p.header[0]
			}
			req, err := http.NewRequest(http.MethodGet, base+p.path, nil)
			if err != nil {
				return err.Error()
			}
			if p.header[0] != "" {
				req.Header.Set(p.header[0], p.header[1])
			}
			resp, err := client.Do(req)
			if err != nil {
				return what + ": " + err.Error()
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode != p.status {
				return fmt.Sprintf("%s answered %d, not %d: %s", what, resp.StatusCode, p.status, strings.TrimSpace(string(body)))
			}
			var d struct{ Instance string }
			_ = json.Unmarshal(body, &d)
			seen[i][d.Instance] = true
			for _, inst := range p.instances {
				if !seen[i][inst] {
					return fmt.Sprintf("%s: instance %s has not answered yet", what, inst)
				}
			}
			passed[i] = true
		}
		return ""
	}
}

// liveIsDemo reports whether the stored configuration is the demo's, as
// up wrote it.
func liveIsDemo(ctx context.Context, cp *controlplane.Server, demoDoc string) (bool, error) {
	snap, err := cp.Store.Snapshot(ctx)
	if err != nil {
		return false, err
	}
	cfg, err := config.Parse([]byte(demoDoc), "demo.yaml")
	if err != nil {
		return false, err
	}
	want := resource.Split(cfg)
	if len(want) != len(snap.Resources) {
		return false, nil
	}
	for ref, v := range want {
		live, ok := snap.Resources[ref]
		if !ok {
			return false, nil
		}
		resource.Normalize(v)
		resource.Normalize(live)
		a, err1 := resource.Encode(v)
		b, err2 := resource.Encode(live)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			return false, nil
		}
	}
	return true, nil
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

// upBanner is what up prints once it serves.
type upBanner struct {
	base, admin, api, etcd   string
	dir, demoFile, accessLog string
	seeded, isDemo           bool
	token                    string
}

func printUp(out io.Writer, b upBanner) {
	base := b.base
	if base == "" {
		base = "(the stored configuration has no listener named public)"
	}
	state := "the configuration stored by an earlier run"
	switch {
	case b.seeded:
		state = "the demo configuration, just stored"
	case b.isDemo:
		state = "the demo configuration, stored by an earlier run"
	}
	accessLog := b.accessLog
	switch accessLog {
	case "", "off":
		accessLog = "off"
	case "stdout", "stderr":
	default:
		accessLog += "   (tail -f it)"
	}
	tokenFile := filepath.Join(b.dir, "controlplane", "admin.token")
	fmt.Fprintf(out, `
wasmgate is up, serving %[6]s.

  proxy          %[1]s
  proxy admin    http://%[2]s   (/ready /metrics /config /clusters)
  control plane  %[3]s
  etcd           %[4]s   (wasmgate run --etcd-endpoints %[4]s follows it)
  access log     %[9]s

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
`, base, b.admin, b.api, b.etcd, b.demoFile, state, tokenFile, b.token, accessLog)
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
# The first-party filters, stored by the control plane as blobs: the
# three from one module in one VM (vm_id), each selected by its root_id.
plugins:
  - name: telemetry
    sha256: %[2]s
    vm_id: firstparty
    root_id: telemetry
    config:
      sample_rate: 1
      trace_id_header: x-trace-id
      service_name: wasmgate-demo
  - name: encryption
    sha256: %[3]s
    vm_id: firstparty
    root_id: encryption
    config:
      default: {require: none}
      keys: {demo: "%[5]s"}
      active_key: demo
      encrypt_headers: [x-ssn]
      redact_headers: [authorization, cookie]
  - name: authz
    sha256: %[4]s
    vm_id: firstparty
    root_id: authz
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
`, listen, shas["firstparty"], shas["firstparty"], shas["firstparty"],
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
