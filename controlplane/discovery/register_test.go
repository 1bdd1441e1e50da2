package discovery_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// TestRegistration: a sidecar's endpoint appears while it runs, comes back
// when its lease is lost, and disappears as soon as it stops.
func TestRegistration(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	h := startHub(t, cli, prefix)
	w := h.Watch(discovery.Interest{Services: []string{"orders.shop"}})
	defer w.Close()
	if got := describe(next(t, w)); got != "orders.shop=[]" {
		t.Fatalf("first update: %s", got)
	}

	reg, err := discovery.NewRegistration(cli, prefix, registry.Endpoint{Cluster: "orders.shop", Address: "10.0.0.1:15006"}, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { reg.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-reg.Registered()
	if got := describe(next(t, w)); got != "orders.shop=[10.0.0.1:15006]" {
		t.Fatalf("after registering: %s", got)
	}

	// The lease is lost (as when etcd was away longer than it): the
	// endpoint goes, and the registration puts it back.
	resp, err := cli.Get(context.Background(), resource.NewKeys(prefix).Endpoint("orders.shop", "10.0.0.1:15006"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading the registration: %v", err)
	}
	revoked, err := cli.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil {
		t.Fatal(err)
	}
	// The removal and the new registration may reach the watcher as one
	// update; what matters is that it ends registered, under a new lease.
	for {
		u := next(t, w)
		if e := u.Endpoints[0]; e.Revision > revoked.Header.Revision && len(e.Items) == 1 {
			break
		}
	}
	again, err := cli.Get(context.Background(), resource.NewKeys(prefix).Endpoint("orders.shop", "10.0.0.1:15006"))
	if err != nil || len(again.Kvs) != 1 || again.Kvs[0].Lease == resp.Kvs[0].Lease {
		t.Fatalf("after losing the lease: %v, %v", again, err)
	}

	// Stopping (drain) removes it at once, not at lease expiry.
	stopped := time.Now()
	cancel()
	<-done
	if got := describe(next(t, w)); got != "orders.shop=[]" {
		t.Fatalf("after stopping: %s", got)
	}
	if d := time.Since(stopped); d > time.Second {
		t.Fatalf("deregistration took %v, longer than the lease", d)
	}

	if _, err := discovery.NewRegistration(cli, prefix, registry.Endpoint{Cluster: "orders/shop", Address: "nohost"}, 0, nil); err == nil {
		t.Fatal("an invalid endpoint was accepted")
	}
}

func TestServiceName(t *testing.T) {
	for _, tc := range []struct {
		host, ns, want string
		ok             bool
	}{
		{"orders", "shop", "orders.shop", true},
		{"orders:8080", "shop", "orders.shop", true},
		{"Orders.Shop", "web", "orders.shop", true},
		{"orders.shop.svc", "web", "orders.shop", true},
		{"orders.shop.svc.cluster.local:80", "web", "orders.shop", true},
		{"orders.shop.svc.cluster.local.", "web", "orders.shop", true},
		{"api.example.com", "shop", "api.example.com", true},
		{"10.0.0.1:80", "shop", "", false},
		{"[::1]:80", "shop", "", false},
		{"orders", "", "", false},
		{"", "shop", "", false},
	} {
		got, ok := discovery.ServiceName(tc.host, tc.ns)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ServiceName(%q, %q) = %q, %v; want %q, %v", tc.host, tc.ns, got, ok, tc.want, tc.ok)
		}
	}
}
