package discovery_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/registry"
)

// TestServiceVIPs: a service's first registration gives it a virtual
// address of registry.VIPPool, which its watchers receive with its
// endpoints; registering again, or asking again, keeps it; many services
// allocated at once, from many callers, never share one.
func TestServiceVIPs(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	h := startHub(t, cli, prefix)
	w := h.Watch(discovery.Interest{Services: []string{"orders.shop"}})
	defer w.Close()
	if u := next(t, w); u.Endpoints[0].VIP != "" {
		t.Fatalf("a service never registered has the address %q", u.Endpoints[0].VIP)
	}
	// The address and the endpoint are keys the hub follows on two
	// watches: they may come in one update or in two.
	register(t, cli, prefix, "orders.shop", "10.0.0.1:15006")
	u := next(t, w)
	for u.Endpoints[0].VIP == "" {
		u = next(t, w)
	}
	vip, err := netip.ParseAddr(u.Endpoints[0].VIP)
	if err != nil || !registry.VIPPool.Contains(vip) || len(u.Endpoints[0].Items) != 1 {
		t.Fatalf("after the first registration: %s %q", describe(u), u.Endpoints[0].VIP)
	}
	register(t, cli, prefix, "orders.shop", "10.0.0.2:15006")
	if u := next(t, w); u.Endpoints[0].VIP != vip.String() || len(u.Endpoints[0].Items) != 2 {
		t.Fatalf("after a second endpoint: %s %q", describe(u), u.Endpoints[0].VIP)
	}
	if again, err := registry.ServiceVIP(context.Background(), cli, prefix, "orders.shop"); err != nil || again != vip {
		t.Fatalf("asked again: %s %v, want %s", again, err, vip)
	}

	const n = 64
	got := make([][2]netip.Addr, n)
	var wg sync.WaitGroup
	for i := range n {
		for c := range 2 { // two callers race for each service
			wg.Go(func() {
				a, err := registry.ServiceVIP(context.Background(), cli, prefix, fmt.Sprintf("svc-%d.shop", i))
				if err != nil {
					t.Error(err)
				}
				got[i][c] = a
			})
		}
	}
	wg.Wait()
	seen := map[netip.Addr]int{vip: -1}
	for i, both := range got {
		a := both[0]
		if both[1] != a {
			t.Fatalf("service %d got %s and %s", i, a, both[1])
		}
		if j, dup := seen[a]; dup || !registry.VIPPool.Contains(a) || a == registry.VIPPool.Addr() {
			t.Fatalf("service %d has %s, also service %d's (or outside the pool)", i, a, j)
		}
		seen[a] = i
	}
}
