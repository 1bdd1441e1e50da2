package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/mesh/sidecar"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// The demo mesh's policies: payments admits orders only, and the file
// that lets web call payments directly.
const (
	meshDemoPolicy = `authorization_policies:
- name: payments-callers
  namespace: default
  service: payments
  rules:
  - from:
    - principals: [spiffe://wasmgate.local/ns/default/sa/orders]
`
	meshDemoAllowWeb = `authorization_policies:
- name: payments-callers
  namespace: default
  service: payments
  rules:
  - from:
    - principals:
      - spiffe://wasmgate.local/ns/default/sa/orders
      - spiffe://wasmgate.local/ns/default/sa/web
`
)

// meshDemoApp is a demo service: a plain HTTP server that knows nothing
// of the mesh. /call/NAME calls service NAME through its sidecar's
// outbound listener; / answers its name and who called it.
type meshDemoApp struct {
	name string
	ln   net.Listener
	srv  *http.Server
	port int
	// outbound is set once, by serve, before the first request.
	outbound string
}

// newMeshDemoApp binds the app's port; it serves once serve is called,
// with its sidecar's outbound address, and connections wait until then.
func newMeshDemoApp(name string, next ...string) (*meshDemoApp, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &meshDemoApp{name: name, ln: l, port: l.Addr().(*net.TCPAddr).Port}
	hc := &http.Client{Timeout: 10 * time.Second}
	call := func(w http.ResponseWriter, to string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.outbound+"/", nil)
		req.Host = to
		resp, err := hc.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		w.WriteHeader(resp.StatusCode)
		fmt.Fprintf(w, "%s -> %s", name, b)
	}
	a.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to, ok := strings.CutPrefix(r.URL.Path, "/call/"); ok && to != "" {
			call(w, to)
			return
		}
		if len(next) > 0 {
			call(w, next[0])
			return
		}
		fmt.Fprintf(w, "%s (called by %s)\n", name, r.Header.Get(native.PeerIdentityHeader))
	})}
	return a, nil
}

// serve starts serving, calling other services through outbound.
func (a *meshDemoApp) serve(outbound string) {
	a.outbound = outbound
	go a.srv.Serve(a.ln) //nolint:errcheck // ends with close
}

func (a *meshDemoApp) close() {
	_ = a.srv.Close()
	_ = a.ln.Close()
}

// runUpMesh is `up --mesh`: a control plane with the mesh's CA and three
// demo services, web -> orders -> payments, each with its own sidecar, in
// this process on loopback addresses. The apps' and sidecars' ports are
// the kernel's picks at the binds of the sockets that serve them (port
// 0), never ports found free beforehand, which another process could take
// before the bind.
func runUpMesh(ctx context.Context, out io.Writer, dir, apiAddr string, log *zap.Logger) error {
	state := filepath.Join(dir, "mesh")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	key, err := localSecretKey(filepath.Join(dir, "secret.key"))
	if err != nil {
		return err
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{
		DataDir: filepath.Join(state, "controlplane"), EtcdClientAddr: "127.0.0.1:0", EtcdPeerAddr: "127.0.0.1:0",
		APIAddr: apiAddr, Logger: log.Named("controlplane"), SecretKey: key, Mesh: true,
	})
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer cp.Close()
	roots, err := os.ReadFile(cp.BundlePath())
	if err != nil {
		return err
	}
	allowFile := filepath.Join(state, "allow-web.yaml")
	if err := os.WriteFile(filepath.Join(state, "policy.yaml"), []byte(meshDemoPolicy), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(allowFile, []byte(meshDemoAllowWeb), 0o644); err != nil {
		return err
	}
	if err := seedMeshPolicy(ctx, cp); err != nil {
		return err
	}

	// The three sidecars' records (access, policy decisions, flows,
	// events) go to one file, through one pipeline they share.
	records := filepath.Join(state, "records.log")
	base := &config.Config{Telemetry: &config.Telemetry{
		Sinks:  []config.TelemetrySink{{Name: "records", Type: "file", File: &config.FileSink{Path: records, MaxSizeMB: 10, MaxBackups: 2}}},
		Access: []string{"records"}, Decision: []string{"records"}, Flow: []string{"records"}, Event: []string{"records"},
	}}
	tel, err := telemetry.New(base.Telemetry, telemetry.WithLogger(log.Named("telemetry")))
	if err != nil {
		return fmt.Errorf("starting the sidecars' telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()

	apps := map[string]*meshDemoApp{}
	calls := map[string][]string{"web": {"orders", "payments"}, "orders": {"payments"}, "payments": nil}
	next := map[string][]string{"web": {"orders"}, "orders": {"payments"}}
	var sidecars []*sidecar.Local
	defer func() {
		for i := len(sidecars) - 1; i >= 0; i-- {
			_ = sidecars[i].Close(5 * time.Second)
		}
	}()
	for _, name := range []string{"payments", "orders", "web"} {
		app, err := newMeshDemoApp(name, next[name]...)
		if err != nil {
			return err
		}
		defer app.close()
		apps[name] = app
		tok, _, err := cp.CA.CreateToken(ctx, "default", name, time.Minute, 1, "wasmgate up")
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		l, err := sidecar.StartLocal(sctx, sidecar.LocalOptions{
			Settings:     sidecar.Settings{Service: name, AppPort: app.port, Inbound: "127.0.0.1:0", Outbound: "127.0.0.1:0", Calls: calls[name]},
			ControlPlane: cp.APIURL(), Roots: roots, JoinToken: tok, TTL: 5 * time.Second,
			Base: base, Telemetry: tel, Logger: log.Named("sidecar"),
		})
		cancel()
		if err != nil {
			return fmt.Errorf("starting %s's sidecar: %w", name, err)
		}
		sidecars = append(sidecars, l)
		app.serve(l.Settings.Outbound)
	}

	web := fmt.Sprintf("http://127.0.0.1:%d", apps["web"].port)
	fmt.Fprintf(out, "\nwasmgate mesh is up: a control plane and web -> orders -> payments, each with its sidecar.\n\n")
	fmt.Fprintf(out, "  control plane  %s (admin token in %s)\n", cp.APIURL(), filepath.Join(state, "controlplane", "admin.token"))
	for _, l := range sidecars {
		s := l.Settings
		fmt.Fprintf(out, "  %-9s app 127.0.0.1:%d  inbound %s (mTLS)  outbound %s  %s\n", s.Service, apps[s.Service].port, s.Inbound, s.Outbound, l.Agent.ID())
	}
	fmt.Fprintf(out, "  records        %s (access, policy decisions, flows and events of the three sidecars, one JSON object a line)\n", records)
	fmt.Fprintln(out)
	show := func(what, url string) {
		// The endpoints reach the callers' sidecars through discovery
		// moments after registration: try for a few seconds.
		var st int
		var body string
		for deadline := time.Now().Add(5 * time.Second); ; {
			st, body = demoGet(url)
			if st != http.StatusServiceUnavailable && st != http.StatusBadGateway || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		fmt.Fprintf(out, "  %s\n    curl %s\n    %d %s\n", what, url, st, strings.TrimSpace(body))
	}
	show("allowed: web -> orders -> payments", web+"/")
	show("denied: web may not call payments directly", web+"/call/payments")
	fmt.Fprintf(out, "\n  let web call payments, live:\n    wasmgate ctl --server %s --ca %s --token-file %s mesh apply -f %s\n",
		cp.APIURL(), cp.BundlePath(), filepath.Join(state, "controlplane", "admin.token"), allowFile)
	fmt.Fprintf(out, "  and ask who may call whom:\n    wasmgate ctl --server %s --ca %s --token-file %s mesh check spiffe://wasmgate.local/ns/default/sa/web payments.default\n",
		cp.APIURL(), cp.BundlePath(), filepath.Join(state, "controlplane", "admin.token"))
	fmt.Fprintf(out, "  and which sidecar holds the latest policies and endpoints:\n    wasmgate ctl --server %s --ca %s --token-file %s mesh status\n\n",
		cp.APIURL(), cp.BundlePath(), filepath.Join(state, "controlplane", "admin.token"))

	select {
	case <-ctx.Done():
	case err := <-cp.Err():
		log.Error("the control plane stopped", zap.Error(err))
	}
	return nil
}

// seedMeshPolicy stores the demo policy the first time.
func seedMeshPolicy(ctx context.Context, cp *controlplane.Server) error {
	doc, err := policy.Parse([]byte(meshDemoPolicy))
	if err != nil {
		return fmt.Errorf("the demo policy is invalid (a bug): %w", err)
	}
	p := &doc.AuthorizationPolicies[0]
	ref := resource.Ref{Kind: resource.AuthorizationPolicies, Name: p.Name}
	snap, err := cp.Store.Snapshot(ctx)
	if err != nil {
		return err
	}
	if _, ok := snap.Resources[ref]; ok {
		return nil
	}
	_, err = cp.Store.Apply(ctx, store.Change{Put: resource.Set{ref: p}, Author: "wasmgate up", Action: "apply", Message: "demo mesh policy"})
	return err
}

func demoGet(url string) (int, string) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b)
}
