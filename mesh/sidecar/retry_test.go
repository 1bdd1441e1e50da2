package sidecar_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/mesh/sidecar"
)

// refusingProxy refuses the first configurations it is given, as a proxy
// does when a module cannot be fetched for a while.
type refusingProxy struct {
	refuse  int32
	applied atomic.Int32
	tries   atomic.Int32
}

func (p *refusingProxy) Apply(_ context.Context, _ *config.Config, _ string) error {
	if p.tries.Add(1) <= p.refuse {
		return errors.New("module 9f2c: the control plane is not reachable")
	}
	p.applied.Add(1)
	return nil
}

// oneUpdate is a discovery source that sends one update, then waits.
type oneUpdate struct{ sent atomic.Bool }

func (s *oneUpdate) Next(ctx context.Context) (discovery.Update, error) {
	if s.sent.CompareAndSwap(false, true) {
		return discovery.Update{Policies: &discovery.Policies{}}, nil
	}
	<-ctx.Done()
	return discovery.Update{}, ctx.Err()
}

// TestRefusedConfigurationIsRetried: a configuration the proxy refused
// is tried again after a backoff though nothing changes, until it is
// applied.
func TestRefusedConfigurationIsRetried(t *testing.T) {
	proxy := &refusingProxy{refuse: 2}
	sc, err := sidecar.New(sidecar.Options{
		Settings: sidecar.Settings{Service: "orders", Namespace: "default", ServiceAccount: "orders", AppPort: 8080,
			Protocol: sidecar.ProtocolHTTP, Inbound: "127.0.0.1:15006", Announce: "127.0.0.1:15006", Outbound: "127.0.0.1:15001", InboundMode: policy.Strict,
			OutboundPolicy: sidecar.RegistryOnly, HopProtocol: sidecar.HopHTTP2},
		TrustDomain: "wasmgate.local", Proxy: proxy, Guard: policy.NewGuard("default", "orders"), Source: &oneUpdate{},
		Debounce: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	select {
	case <-sc.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("not applied after %d tries", proxy.tries.Load())
	}
	if proxy.tries.Load() != 3 || proxy.applied.Load() != 1 {
		t.Fatalf("tries %d, applied %d; want 3 and 1", proxy.tries.Load(), proxy.applied.Load())
	}
	cancel()
	<-done
}
