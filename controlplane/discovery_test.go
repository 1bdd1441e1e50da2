package controlplane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// TestDiscoveryServed: the hub runs in the control plane and its stream
// is served behind the API's authentication; a control plane holding only
// policies is a valid one; a sidecar with a mesh certificate may watch
// only its own policies.
func TestDiscoveryServed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startMesh(t)
	admin := meshClient(t, s, meshAdmin, nil)

	// A policy PUT without a name in its body takes the path's.
	if _, err := admin.Put(ctx, resource.Ref{Kind: resource.AuthorizationPolicies, Name: "orders-callers"},
		[]byte("namespace: shop\nservice: orders\nrules:\n- from:\n  - principals: [spiffe://wasmgate.local/ns/shop/sa/web]\n"), api.Options{}); err != nil {
		t.Fatalf("a policy alone: %v", err)
	}

	pair := workloadCert(ctx, t, s, admin, "shop", "orders")
	stream := func(token string, cert *tls.Certificate) *discovery.Client {
		c := meshClient(t, s, token, cert)
		h := http.Header{}
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
		return &discovery.Client{URL: s.APIURL() + api.DiscoveryPath, HTTP: c.HTTP, Header: h}
	}

	for _, tc := range []struct {
		name   string
		client *discovery.Client
		in     discovery.Interest
		status int // 0: served
	}{
		{"own identity by certificate", stream("", &pair), discovery.Interest{Namespace: "shop", Service: "orders", Services: []string{"payments.shop"}}, 0},
		{"another namespace by certificate", stream("", &pair), discovery.Interest{Namespace: "bank", Service: "orders"}, http.StatusForbidden},
		{"another service by certificate", stream("", &pair), discovery.Interest{Namespace: "shop", Service: "payments"}, http.StatusForbidden},
		{"anything with a read token", stream(meshRead, nil), discovery.Interest{Namespace: "shop", Service: "payments"}, 0},
		{"nothing without either", stream("", nil), discovery.Interest{Namespace: "shop", Service: "orders"}, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.client.Watch(tc.in)
			defer st.Close()
			u, err := st.Next(ctx)
			var refused *discovery.RefusedError
			switch {
			case tc.status == 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.status == 0:
				if tc.in.Service == "orders" && (u.Policies == nil || len(u.Policies.Authorization) != 1 || u.Policies.Authorization[0].Name != "orders-callers") {
					t.Fatalf("first update's policies = %+v", u.Policies)
				}
			case !errors.As(err, &refused) || refused.Status != tc.status:
				t.Fatalf("got %v, want status %d", err, tc.status)
			}
		})
	}
}

// workloadCert gets a workload certificate of ns/sa from the control
// plane's CA, as a sidecar does: a join token, then a CSR.
func workloadCert(ctx context.Context, t *testing.T, s *controlplane.Server, admin *api.Client, ns, sa string) tls.Certificate {
	t.Helper()
	tc, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: ns, ServiceAccount: sa})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := meshClient(t, s, "", nil).Sign(ctx, api.SignRequest{CSR: newCSR(t, key), JoinToken: tc.Token, Proxy: sa + "-1"})
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair([]byte(iss.CertPEM), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// TestWorkloadRegistersItself: a sidecar registers its own endpoint
// through the API with its workload certificate, no etcd credentials and
// no token; it may register only as the service of its identity, under
// ids of its service account; its registration is renewed while it runs
// and removed when it stops.
func TestWorkloadRegistersItself(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startMesh(t)
	admin := meshClient(t, s, meshAdmin, nil)
	pair := workloadCert(ctx, t, s, admin, "shop", "orders")
	self := meshClient(t, s, "", &pair)

	for _, tc := range []struct {
		name, cluster, id string
		status            int // 0: registered
	}{
		{"its own service", "orders.shop", "orders:10.0.0.2:15006", 0},
		{"another service", "payments.shop", "orders:10.0.0.2:15006", http.StatusForbidden},
		{"its service in another namespace", "orders.bank", "orders:10.0.0.2:15006", http.StatusForbidden},
		{"an id of another identity", "orders.shop", "payments:10.0.0.2:15006", http.StatusForbidden},
		{"an invalid address", "orders.shop", "orders:x", http.StatusUnprocessableEntity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := "10.0.0.2:15006"
			if tc.status == http.StatusUnprocessableEntity {
				addr = "not an address"
			}
			_, err := self.RegisterEndpoint(ctx, tc.cluster, tc.id, api.EndpointRequest{Address: addr})
			var ae *api.Error
			switch {
			case tc.status == 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.status != 0 && (!errors.As(err, &ae) || ae.Status != tc.status):
				t.Fatalf("got %v, want status %d", err, tc.status)
			}
		})
	}
	if err := self.DeregisterEndpoint(ctx, "payments.shop", "orders:10.0.0.2:15006"); err == nil {
		t.Fatal("a workload deregistered another service's endpoint")
	}
	if err := self.DeregisterEndpoint(ctx, "orders.shop", "orders:10.0.0.2:15006"); err != nil {
		t.Fatal(err)
	}

	// Registration keeps it registered (renewals in a lease of 2 s) and
	// removes it when it stops.
	ep := registry.Endpoint{Cluster: "orders.shop", ID: "orders:10.0.0.3:15006", Address: "10.0.0.3:15006"}
	reg, err := api.NewRegistration(self, ep, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- reg.Run(rctx) }()
	select {
	case <-reg.Registered():
	case <-ctx.Done():
		t.Fatal("not registered")
	}
	listed := func() int {
		t.Helper()
		l, err := admin.Endpoints(ctx, "orders.shop")
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	time.Sleep(3 * time.Second) // past the lease of 2 s: only renewals keep it
	if n := listed(); n != 1 {
		t.Fatalf("after more than the lease, %d endpoints listed; want 1", n)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := listed(); n != 0 {
		t.Fatalf("after the registration stopped, %d endpoints listed; want 0", n)
	}

	// A registration the control plane refuses ends with the refusal.
	bad, _ := api.NewRegistration(self, registry.Endpoint{Cluster: "payments.shop", ID: "orders:10.0.0.4:15006", Address: "10.0.0.4:15006"}, 0, nil)
	var ae *api.Error
	if err := bad.Run(ctx); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Fatalf("a refused registration ended with %v; want 403", err)
	}
}
