package sidecar_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// TestIngressGateway: traffic from outside enters the mesh through a
// wasmgate that follows the control plane's configuration with a workload
// identity of its own (spiffe://wasmgate.local/ns/ingress/sa/gateway): a
// public virtual host routes /orders to the cluster orders.default, whose
// endpoints are orders' registered sidecars (discovery: registry),
// reached over the mesh's mutual TLS. orders' app sees the gateway's
// identity from its sidecar; orders' authorization policy decides on it,
// and a policy that leaves the gateway out gets its callers a 403.
func TestIngressGateway(t *testing.T) {
	m := startProcessMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "orders %s for %s", r.URL.Path, r.Header.Get("X-Wasmgate-Peer-Identity"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	m.start(t, "orders", port(t, l.Addr().String()), testaddr.Free(t))

	// The gateway's configuration, in the control plane.
	public := testaddr.Free(t)
	doc := fmt.Sprintf(`
listeners: [{name: public, address: %q}]
clusters:
  - name: orders.default
    discovery: registry
    protocol: http2
    tls: {mesh: true, expected_identities: ["spiffe://wasmgate.local/ns/default/sa/orders"]}
virtual_hosts:
  - name: shop
    domains: [shop.example.com]
    routes: [{name: orders, match: {prefix: /orders}, cluster: orders.default}]
`, public)
	if _, err := m.admin.Apply(ctx, []byte(doc), api.Options{}); err != nil {
		t.Fatalf("the gateway's configuration: %v", err)
	}
	tok, err := m.admin.CreateToken(ctx, api.TokenRequest{Namespace: "ingress", ServiceAccount: "gateway"})
	if err != nil {
		t.Fatal(err)
	}
	own := mkdir(t, filepath.Join(m.dir, "gateway"))
	m.sidecars.start(t, m.bin, "run", "--etcd-endpoints", strings.Join(m.cp.EtcdEndpoints(), ","),
		"--identity-server", m.cp.APIURL(), "--join-token", tok.Token, "--trust-bundle-file", m.bundle,
		"--identity-dir", filepath.Join(own, "identity"), "--wasm-cache-dir", filepath.Join(own, "wasm"),
		"--cache-file", filepath.Join(own, "cache"), "--access-log", "", "--admin", "off")

	call := func() (string, error) { return get(public, "shop.example.com", "/orders/7") }
	want := "200 orders /orders/7 for spiffe://wasmgate.local/ns/ingress/sa/gateway"
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := call()
		if err == nil && got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("through the gateway: %q %v, want %q\n%s", got, err, want, m.sidecars.output())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// orders admits only web: the gateway's calls are refused by orders'
	// sidecar, with its reason.
	putPolicy(t, m.admin, "orders-callers", `{"name": "orders-callers", "namespace": "default", "service": "orders",
		"rules": [{"from": [{"principals": ["spiffe://wasmgate.local/ns/default/sa/web"]}]}]}`)
	deadline = time.Now().Add(10 * time.Second)
	for {
		got, err := call()
		if err == nil && strings.HasPrefix(got, "403 ") && strings.Contains(got, "RBAC: access denied") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway, left out of orders' policy: %q %v", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
