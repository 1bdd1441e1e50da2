package registry_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// TestProxyThatNeverRegisteredSaysSoOnce: a proxy whose etcd cannot be
// reached says once that it cannot register, never that a registration
// it never had was lost.
func TestProxyThatNeverRegisteredSaysSoOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + addr}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	core, logs := observer.New(zapcore.DebugLevel)
	p := registry.NewProxy(cli, "/wasmgate", registry.ProxyInfo{NodeID: "n1", Address: "127.0.0.1:9902"}, 2*time.Second, zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	// Three tries: the first says it, the next two only at debug level.
	deadline := time.Now().Add(60 * time.Second)
	for logs.FilterMessage("cannot register the proxy").Len() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than three tries in 60s: %v", logs.All())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	if n := logs.FilterMessage("cannot register the proxy; retrying until it can").FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 {
		t.Errorf("%d warnings that it cannot register, want 1: %v", n, logs.All())
	}
	if n := logs.FilterMessageSnippet("lost").Len(); n != 0 {
		t.Errorf("a registration never made is said lost: %v", logs.All())
	}
}

// TestEndpointVersion: an endpoint's version is stored with it and read
// back; one that is no label is refused with its field.
func TestEndpointVersion(t *testing.T) {
	keys := resource.NewKeys("")
	ep := registry.Endpoint{Cluster: "orders.shop", ID: "orders:10.0.0.2:15006", Address: "10.0.0.2:15006", Version: "v2.1-rc1"}
	back, err := registry.DecodeEndpoint(keys, keys.Endpoint(ep.Cluster, ep.ID), registry.EncodeEndpoint(ep))
	if err != nil || back.Version != "v2.1-rc1" || back.Address != ep.Address {
		t.Fatalf("decoded %+v, %v", back, err)
	}
	for _, v := range []string{"V2", "-v2", "v2-", "v 2", strings.Repeat("a", 64)} {
		bad := ep
		bad.Version = v
		if err := bad.Check(); err == nil || !strings.Contains(err.Error(), "version:") {
			t.Errorf("version %q: %v", v, err)
		}
	}
}

// TestEndpointProtocol: an endpoint of opaque TCP says so, stored and
// read back; an HTTP one stores nothing more than before; any other
// protocol is refused with its field.
func TestEndpointProtocol(t *testing.T) {
	keys := resource.NewKeys("")
	ep := registry.Endpoint{Cluster: "db.shop", ID: "db:10.0.0.3:15006", Address: "10.0.0.3:15006", Protocol: registry.ProtocolTCP}
	back, err := registry.DecodeEndpoint(keys, keys.Endpoint(ep.Cluster, ep.ID), registry.EncodeEndpoint(ep))
	if err != nil || back.Protocol != registry.ProtocolTCP {
		t.Fatalf("decoded %+v, %v", back, err)
	}
	ep.Protocol = ""
	if v := string(registry.EncodeEndpoint(ep)); strings.Contains(v, "protocol") {
		t.Errorf("an HTTP endpoint is stored as %s", v)
	}
	for _, p := range []string{"http", "TCP", "udp"} {
		bad := ep
		bad.Protocol = p
		if err := bad.Check(); err == nil || !strings.Contains(err.Error(), "protocol:") {
			t.Errorf("protocol %q: %v", p, err)
		}
	}
}
