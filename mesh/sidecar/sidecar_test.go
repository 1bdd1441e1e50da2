package sidecar_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/mesh/sidecar"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

const adminToken = "sidecar-test-admin-0123456789"

// app is a plain HTTP server that knows nothing of the mesh. /call?to=X
// calls service X through its sidecar's outbound listener, with the
// headers given as hdr=NAME:VALUE; anything else answers its name and the
// peer identity its sidecar saw. It binds its port at once and serves
// once serve has its sidecar's outbound address.
func app(t testing.TB, name string) (port int, serve func(outbound string)) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var outbound string
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to := r.URL.Query().Get("to"); to != "" {
			req, _ := http.NewRequest(http.MethodGet, "http://"+outbound+"/from-"+name, nil)
			req.Host = to
			for _, h := range r.URL.Query()["hdr"] {
				k, v, _ := strings.Cut(h, ":")
				req.Header.Set(k, v)
			}
			resp, err := hc.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			w.WriteHeader(resp.StatusCode)
			fmt.Fprintf(w, "%s -> %s", name, b)
			return
		}
		fmt.Fprintf(w, "%s (called by %s)", name, r.Header.Get(native.PeerIdentityHeader))
	})}
	t.Cleanup(func() { srv.Close(); l.Close(); tr.CloseIdleConnections() })
	return l.Addr().(*net.TCPAddr).Port, func(out string) {
		outbound = out
		go srv.Serve(l)
	}
}

type mesh struct {
	cp      *controlplane.Server
	admin   *api.Client
	sidecar map[string]*sidecar.Local
	apps    map[string]int
	// records is the file of the sidecars' records (startMeshRecords).
	records string
}

// startMesh runs a control plane and web -> orders -> payments, each app
// with its sidecar, on loopback; payments admits only orders.
func startMesh(t testing.TB) *mesh { return startMeshWith(t, false, 2*time.Second) }

// startMeshRecords is startMesh with the sidecars' records (access,
// decision, flow, event) written to one file, m.records, through one
// pipeline they share, as `up --mesh` runs them.
func startMeshRecords(t testing.TB) *mesh { return startMeshWith(t, true, 2*time.Second) }

// startMeshWith is startMesh with the records of startMeshRecords or
// not, and the sidecars' registrations under leases of ttl (tests take a
// short one, for losses to show soon).
func startMeshWith(t testing.TB, records bool, ttl time.Duration) *mesh {
	t.Helper()
	return startMeshHop(t, records, ttl, "")
}

// startMeshHop is startMeshWith with the sidecars' hop_protocol set to
// hop ("" for the default).
func startMeshHop(t testing.TB, records bool, ttl time.Duration, hop string) *mesh {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cp, admin, roots := startControlPlane(t)
	var err error
	putPolicy(t, admin, "payments-callers", "namespace: default\nservice: payments\nrules:\n- from:\n  - principals: [spiffe://wasmgate.local/ns/default/sa/orders]\n")
	m := &mesh{cp: cp, admin: admin, sidecar: map[string]*sidecar.Local{}, apps: map[string]int{}}
	var base *config.Config
	var tel *telemetry.Pipeline
	if records {
		m.records = filepath.Join(t.TempDir(), "records.log")
		base = &config.Config{Telemetry: &config.Telemetry{
			Sinks:  []config.TelemetrySink{{Name: "file", Type: "file", File: &config.FileSink{Path: m.records}}},
			Access: []string{"file"}, Decision: []string{"file"}, Flow: []string{"file"}, Event: []string{"file"},
		}}
		if tel, err = telemetry.New(base.Telemetry); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tel.Shutdown(context.Background()) })
	}
	calls := map[string][]string{"web": {"orders", "payments"}, "orders": {"payments"}, "payments": nil}
	for _, name := range []string{"payments", "orders", "web"} {
		tok, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: "default", ServiceAccount: name})
		if err != nil {
			t.Fatal(err)
		}
		port, serve := app(t, name)
		m.apps[name] = port
		l, err := sidecar.StartLocal(ctx, sidecar.LocalOptions{
			Settings:     sidecar.Settings{Service: name, AppPort: port, Inbound: "127.0.0.1:0", Outbound: "127.0.0.1:0", Calls: calls[name], HopProtocol: hop},
			ControlPlane: cp.APIURL(), Roots: roots, JoinToken: tok.Token, TTL: ttl,
			Base: base, Telemetry: tel,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close(5 * time.Second) })
		m.sidecar[name] = l
		serve(l.Settings.Outbound)
	}
	return m
}

// startControlPlane runs a mesh control plane on loopback, with its
// embedded etcd, for the test; it returns an admin client of its API and
// the trust bundle.
func startControlPlane(t testing.TB) (*controlplane.Server, *api.Client, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key, err := secret.ParseKey(secret.NewKeyText())
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{
		DataDir: t.TempDir(), EtcdClientAddr: "127.0.0.1:0", EtcdPeerAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
		Logger: zap.NewNop(), SecretKey: key, Mesh: true,
		Tokens: []api.Token{{Name: "ops", Role: api.RoleAdmin, Secret: adminToken}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	roots, err := os.ReadFile(cp.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	return cp, adminClient(t, cp, roots), roots
}

func adminClient(t testing.TB, cp *controlplane.Server, roots []byte) *api.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		t.Fatal("the bundle holds no root")
	}
	return &api.Client{Server: cp.APIURL(), Token: adminToken,
		HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

func putPolicy(t testing.TB, c *api.Client, name, doc string) {
	t.Helper()
	if _, err := c.Put(context.Background(), resource.Ref{Kind: resource.AuthorizationPolicies, Name: name}, []byte(doc), api.Options{}); err != nil {
		t.Fatalf("policy %s: %v", name, err)
	}
}

// webSeesEndpoints reports whether web's sidecar holds n endpoints of
// orders.
func webSeesEndpoints(m *mesh, n int) bool {
	snap := m.sidecar["web"].Server.Snapshot()
	if snap == nil || snap.Config == nil {
		return false
	}
	for _, c := range snap.Config.Clusters {
		if c.Name == "svc.orders.default" {
			return len(c.Endpoints) == n
		}
	}
	return false
}

// call asks web's app to call a service through web's sidecar.
func call(t *testing.T, m *mesh, to string, hdr ...string) (int, string) {
	t.Helper()
	u := fmt.Sprintf("http://127.0.0.1:%d/?to=%s", m.apps["web"], to)
	for _, h := range hdr {
		u += "&hdr=" + h
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestLoopbackMesh(t *testing.T) {
	m := startMeshRecords(t)

	// web -> orders (-> payments, through orders' own sidecar, in the
	// orders app's answer).
	if st, body := call(t, m, "orders"); st != 200 || body != "web -> orders (called by spiffe://wasmgate.local/ns/default/sa/web)" {
		t.Fatalf("web -> orders: %d %q", st, body)
	}
	for _, host := range []string{"orders.default", "orders.default.svc", "orders.default.svc.cluster.local:80"} {
		if st, body := call(t, m, host); st != 200 {
			t.Fatalf("web -> %s: %d %q", host, st, body)
		}
	}
	// web -> payments: denied by payments' policy, whatever web claims.
	if st, body := call(t, m, "payments", native.PeerIdentityHeader+":spiffe://wasmgate.local/ns/default/sa/orders"); st != 403 || !strings.Contains(body, "RBAC: access denied") {
		t.Fatalf("web -> payments: %d %q", st, body)
	}
	// The denial is a decision record of payments' sidecar, naming the
	// caller by its certificate, not by the header it sent.
	waitFor(t, "the denial's decision record", 10*time.Second, func() bool {
		return hasRecord(t, m.records, map[string]string{"kind": "decision", "verdict": "deny", "destination": "payments.default",
			"source_identity": "spiffe://wasmgate.local/ns/default/sa/web"})
	})
	// The allowed calls' access records at orders' inbound, and the flows
	// of the connections between sidecars once they close.
	if !hasRecord(t, m.records, map[string]string{"kind": "access", "source_identity": "spiffe://wasmgate.local/ns/default/sa/web", "status": "200"}) {
		t.Errorf("no access record of web's call at orders' sidecar in %s", m.records)
	}

	// A name outside the mesh: registry_only.
	if st, body := call(t, m, "example.com"); st != 502 || !strings.Contains(body, "registry_only") {
		t.Fatalf("web -> example.com: %d %q", st, body)
	}
	// Plain text to a strict inbound: no HTTP answer.
	resp, err := http.Get("http://" + m.sidecar["payments"].Settings.Inbound + "/")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("plain text to a strict inbound answered %s", resp.Status)
	}

	// An endpoint of orders registered at payments' sidecar (a mistake, or
	// a hijack): web's sidecar expects orders' identity, refuses payments'
	// certificate in the handshake and retries on orders' real sidecar.
	bogus := registry.Endpoint{Cluster: "orders.default", ID: "orders:bogus", Address: m.sidecar["payments"].Settings.Inbound}
	if _, err := registry.RegisterEndpoint(context.Background(), m.cp.Client, "", bogus, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bogus endpoint at web's sidecar", 10*time.Second, func() bool { return webSeesEndpoints(m, 2) })
	for range 20 {
		if st, body := call(t, m, "orders"); st != 200 || !strings.HasPrefix(body, "web -> orders (called by") {
			t.Fatalf("web -> orders beside a bogus endpoint: %d %q", st, body)
		}
	}
	if _, err := registry.DeregisterEndpoint(context.Background(), m.cp.Client, "", bogus.Cluster, bogus.ID); err != nil {
		t.Fatal(err)
	}

	// A policy change under load: no allowed call fails, and web -> payments
	// becomes allowed.
	var stop atomic.Bool
	var failed, done atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if st, _ := call(t, m, "orders"); st != 200 {
					failed.Add(1)
				}
				done.Add(1)
			}
		}()
	}
	start := time.Now()
	putPolicy(t, m.admin, "payments-callers", "namespace: default\nservice: payments\nrules:\n- from:\n  - principals: [spiffe://wasmgate.local/ns/default/sa/orders, spiffe://wasmgate.local/ns/default/sa/web]\n")
	for {
		if st, _ := call(t, m, "payments"); st == 200 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the policy change did not reach payments' sidecar in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the policy change took effect after %v", time.Since(start))
	stop.Store(true)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during the policy change", failed.Load(), done.Load())
	}

	// A sidecar with outbound_policy allow_any passes a call to a name
	// outside the mesh on to it.
	outside := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "outside "+r.URL.Path) })}
	ol, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go outside.Serve(ol)
	defer outside.Close()
	tok, err := m.admin.CreateToken(context.Background(), api.TokenRequest{Namespace: "default", ServiceAccount: "gateway"})
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := os.ReadFile(m.cp.BundlePath())
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	gw, err := sidecar.StartLocal(sctx, sidecar.LocalOptions{
		Settings:     sidecar.Settings{Service: "gateway", AppPort: 1, Inbound: "127.0.0.1:0", Outbound: "127.0.0.1:0", OutboundPolicy: sidecar.AllowAny},
		ControlPlane: m.cp.APIURL(), Roots: roots, JoinToken: tok.Token, Unregistered: true,
	})
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close(time.Second)
	req, _ := http.NewRequest(http.MethodGet, "http://"+gw.Settings.Outbound+"/out", nil)
	req.Host = ol.Addr().String()
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "outside /out" {
			t.Fatalf("allow_any: %s %q", resp.Status, b)
		}
	}

	// A peer authentication makes orders permissive: plain text is served
	// beside mTLS (without a peer identity), and payments stays strict.
	if _, err := m.admin.Put(context.Background(), resource.Ref{Kind: resource.PeerAuthentications, Name: "orders-migration"},
		[]byte("namespace: default\nservice: orders\nmode: permissive\n"), api.Options{}); err != nil {
		t.Fatal(err)
	}
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := plain.Get("http://" + m.sidecar["orders"].Settings.Inbound + "/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "orders (called by )" {
				t.Fatalf("plain text to a permissive inbound: %s %q", resp.Status, b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orders' inbound did not become permissive: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, body := call(t, m, "orders"); st != 200 || !strings.Contains(body, "called by spiffe://wasmgate.local/ns/default/sa/web") {
		t.Fatalf("mTLS to a permissive inbound: %d %q", st, body)
	}
	if resp, err := plain.Get("http://" + m.sidecar["payments"].Settings.Inbound + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("plain text to payments, still strict, answered %s", resp.Status)
	}
}

// hasRecord reports whether the records file holds a record with every
// field of want (numbers compared as written).
func hasRecord(t testing.TB, path string, want map[string]string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		ok := true
		for k, v := range want {
			if fmt.Sprint(rec[k]) != v {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// TestHopProtocol: by default web's HTTP/1.1 call reaches orders' sidecar
// in HTTP/2; with hop_protocol downstream, in HTTP/1.1. Each is read from
// the access record of orders' inbound listener, as an operator would.
func TestHopProtocol(t *testing.T) {
	for _, c := range []struct{ hop, want string }{{"", "HTTP/2"}, {sidecar.HopDownstream, "HTTP/1.1"}} {
		m := startMeshHop(t, true, 2*time.Second, c.hop)
		if st, body := call(t, m, "orders"); st != 200 {
			t.Fatalf("hop_protocol %q: web -> orders: %d %q", c.hop, st, body)
		}
		waitFor(t, "orders' access record of web's call", 10*time.Second, func() bool {
			return hasRecord(t, m.records, map[string]string{"kind": "access", "status": "200",
				"source_identity": "spiffe://wasmgate.local/ns/default/sa/web", "protocol": c.want})
		})
	}
}
