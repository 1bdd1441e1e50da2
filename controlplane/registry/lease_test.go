package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/registry"
)

// TestKeepLeaseSaysLossByItsTTL cuts etcd off before a two-second lease's
// first keep-alive is answered: the loss is said once the lease's TTL has
// passed by the clock, not after the client's dial timeout (five seconds
// here) plus a second, as the etcd client alone would say it. A lease kept
// alive while etcd answers is not reported.
func TestKeepLeaseSaysLossByItsTTL(t *testing.T) {
	ep := etcdtest.Endpoints(t)[0]
	gate := etcdtest.NewGate(t, strings.TrimPrefix(ep, "http://"))
	cli := etcdtest.ClientOf(t, []string{gate.Endpoint()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	kept, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	lost, err := registry.KeepLease(ctx, cli, kept.ID, kept.TTL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lost:
		t.Fatalf("a lease kept alive was reported lost: %v", err)
	case <-time.After(3 * time.Second):
	}

	lease, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	gate.Cut()
	lost, err = registry.KeepLease(ctx, cli, lease.ID, lease.TTL, granted)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lost:
		if !errors.Is(err, registry.ErrLeaseExpired) {
			t.Fatalf("lost with %v, want ErrLeaseExpired", err)
		}
		if after := time.Since(granted); after < 2*time.Second {
			t.Fatalf("reported lost after %v, before its TTL", after)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a lease etcd could not renew was not reported lost within 5s")
	}
}
