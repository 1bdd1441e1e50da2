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

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
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

	tc, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: "shop", ServiceAccount: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := meshClient(t, s, "", nil).Sign(ctx, api.SignRequest{CSR: newCSR(t, key), JoinToken: tc.Token, Proxy: "orders-1"})
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair([]byte(iss.CertPEM), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
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
