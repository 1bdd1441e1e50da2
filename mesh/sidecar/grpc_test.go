package sidecar_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/mesh/sidecar"
)

// TestGRPCThroughSidecars: a gRPC app (protocol grpc) behind its sidecar,
// called by a plain gRPC client through its own sidecar's outbound
// listener (h2c), HTTP/2 over mTLS between them, trailers and all.
func TestGRPCThroughSidecars(t *testing.T) {
	m := startMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	roots, err := os.ReadFile(m.cp.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	appPort, _ := grpcLedgerApp(t, healthpb.HealthCheckResponse_SERVING)

	start := func(name string, port int, calls []string, protocol string) *sidecar.Local {
		tok, err := m.admin.CreateToken(ctx, api.TokenRequest{Namespace: "default", ServiceAccount: name})
		if err != nil {
			t.Fatal(err)
		}
		sc, err := sidecar.StartLocal(ctx, sidecar.LocalOptions{
			Settings:     sidecar.Settings{Service: name, AppPort: port, Protocol: protocol, Inbound: "127.0.0.1:0", Outbound: "127.0.0.1:0", Calls: calls},
			ControlPlane: m.cp.APIURL(), Roots: roots, JoinToken: tok.Token, Etcd: m.cp.Client, TTL: 2 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Close(time.Second) })
		return sc
	}
	start("ledger", appPort, nil, sidecar.ProtocolGRPC)
	client := start("billing", 1, []string{"ledger"}, sidecar.ProtocolGRPC)

	conn, err := grpc.NewClient("passthrough:///"+client.Settings.Outbound,
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("ledger"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	var resp *healthpb.HealthCheckResponse
	waitFor(t, "a gRPC call through two sidecars", 10*time.Second, func() bool {
		resp, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "ledger"})
		return err == nil
	})
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status %v", resp.Status)
	}
	// A gRPC error status comes back in the trailers.
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); status.Code(err) != codes.NotFound {
		t.Fatalf("an unknown service: %v", err)
	}

	// A denial by ledger's policy reaches the client as gRPC's
	// PERMISSION_DENIED with the reason, not as an HTTP 403 the client
	// must guess from, as Envoy answers a gRPC request itself.
	putPolicy(t, m.admin, "ledger-callers", "namespace: default\nservice: ledger\nrules:\n- from:\n  - principals: [spiffe://wasmgate.local/ns/default/sa/nobody]\n")
	waitFor(t, "the policy to deny billing", 10*time.Second, func() bool {
		_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "ledger"})
		return err != nil
	})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), "RBAC: access denied") {
		t.Fatalf("a denied call: %v, want PermissionDenied, RBAC: access denied...", err)
	}
}

// TestGRPCHealthCheck: a gRPC app's sidecar asks the app's own health
// service (health_check grpc, grpc_service ledger): ledger is registered
// only while the app says SERVING, and deregistered when it says
// NOT_SERVING.
func TestGRPCHealthCheck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp, admin, roots := startControlPlane(t)
	appPort, hs := grpcLedgerApp(t, healthpb.HealthCheckResponse_NOT_SERVING)
	tok, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: "default", ServiceAccount: "ledger"})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sidecar.StartLocal(ctx, sidecar.LocalOptions{
		Settings: sidecar.Settings{Service: "ledger", AppPort: appPort, Protocol: sidecar.ProtocolGRPC,
			Inbound: "127.0.0.1:0", Outbound: "127.0.0.1:0",
			HealthCheck: &sidecar.HealthCheck{GRPC: true, GRPCService: "ledger", Interval: config.Duration(100 * time.Millisecond)}},
		ControlPlane: cp.APIURL(), Roots: roots, JoinToken: tok.Token, Etcd: cp.Client, TTL: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close(time.Second) })
	registered := func() int {
		l, err := admin.Endpoints(ctx, "ledger.default")
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	until := func(what string, want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); registered() != want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n := registered(); n != 0 {
		t.Fatalf("ledger registered while NOT_SERVING: %d endpoints", n)
	}
	hs.SetServingStatus("ledger", healthpb.HealthCheckResponse_SERVING)
	until("ledger registered once SERVING", 1)
	hs.SetServingStatus("ledger", healthpb.HealthCheckResponse_NOT_SERVING)
	until("ledger deregistered once NOT_SERVING", 0)
}

// grpcLedgerApp serves a gRPC app on loopback whose health service says
// st of "ledger", until the test ends; it returns the app's port and its
// health server.
func grpcLedgerApp(t *testing.T, st healthpb.HealthCheckResponse_ServingStatus) (int, *health.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("ledger", st)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return l.Addr().(*net.TCPAddr).Port, hs
}
