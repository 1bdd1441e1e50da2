package registry

import (
	"context"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// TestTrafficHeartbeat registers a proxy on a real etcd, reports its
// traffic, and reads it back as `ctl status` does; a change below the
// rounding does not rewrite the registration.
func TestTrafficHeartbeat(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	p := NewProxy(cli, prefix, ProxyInfo{NodeID: "proxy-7", Revision: 3}, 2*time.Second, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	p.SetTraffic(Traffic{RequestRate: 120.04, Ratio5xx: 0.01234, TelemetryDropped: 9})
	var got *Traffic
	deadline := time.Now().Add(10 * time.Second)
	for got == nil || got.TelemetryDropped != 9 {
		if time.Now().After(deadline) {
			t.Fatalf("the registration never carried the traffic: %+v", got)
		}
		list, err := Proxies(context.Background(), cli, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 1 {
			got = list[0].Traffic
		}
		time.Sleep(20 * time.Millisecond)
	}
	if *got != (Traffic{RequestRate: 120, Ratio5xx: 0.012, TelemetryDropped: 9}) {
		t.Errorf("registered traffic %+v", *got)
	}
	p.mu.Lock()
	before := p.info.Traffic
	p.mu.Unlock()
	p.SetTraffic(Traffic{RequestRate: 119.99, Ratio5xx: 0.0121, TelemetryDropped: 9})
	p.mu.Lock()
	after := p.info.Traffic
	p.mu.Unlock()
	if before != after {
		t.Error("a change below the rounding replaced the traffic")
	}
}
