package plugins_test

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
)

// TestGRPCLocalReplies: what the proxy or a filter answers itself to a
// gRPC request reaches a gRPC client (grpc-go) as a gRPC status, as
// Envoy's local replies do: HTTP 200, grpc-status from the HTTP status
// (or the one the filter gave), the body as grpc-message. A request that
// is not gRPC gets the plain answer, without grpc-status.
func TestGRPCLocalReplies(t *testing.T) {
	wasmFile, _ := filepath.Abs("../proxy/wasm/testdata/features.wasm")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	p := e2e.Start(t, `
listeners:
- name: main
  address: 127.0.0.1:0
  http2: {h2c: true}
clusters:
- name: backend
  endpoints: [{address: "{{backend}}"}]
- name: grpc
  protocol: http2
  endpoints: [{address: "{{grpc}}"}]
- name: gone
  protocol: http2
  endpoints: [{address: "{{gone}}"}]
plugins:
- name: features
  file: {{wasm}}
virtual_hosts:
- name: any
  domains: ["*"]
  filters: [{plugin: features}]
  routes:
  - {name: check, match: {path: /grpc.health.v1.Health/Check, headers: [{name: x-gone, present: true}]}, cluster: gone}
  - {name: health, match: {path: /grpc.health.v1.Health/Check}, cluster: grpc}
  - {name: plain, match: {prefix: /plain}, cluster: backend}
`, map[string]string{"wasm": wasmFile, "grpc": l.Addr().String(), "gone": closed.Addr().String()})

	conn, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(p.URL, "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("a call the proxy forwards: %v", err)
	}
	for _, tc := range []struct {
		name string
		md   []string
		code codes.Code
		msg  string
	}{
		{"a filter's 403", []string{"x-local", "403"}, codes.PermissionDenied, "local"},
		{"a filter's 401 with its own gRPC status", []string{"x-local", "401", "x-local-grpc", "9"}, codes.FailedPrecondition, "local"},
		{"an upstream that refuses connections", []string{"x-gone", "1"}, codes.Unavailable, "upstream_connect_failure"},
	} {
		var trailer metadata.MD
		_, err := hc.Check(metadata.AppendToOutgoingContext(ctx, tc.md...), &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer))
		if st := status.Convert(err); st.Code() != tc.code || st.Message() != tc.msg {
			t.Errorf("%s: %v, want %v %q", tc.name, err, tc.code, tc.msg)
		}
		if tc.md[0] == "x-local" && len(trailer.Get("x-local")) == 0 {
			t.Errorf("%s: the filter's header is missing: %v", tc.name, trailer)
		}
	}
	// No route: the Watch method is not routed.
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != "route_not_found" {
		t.Errorf("no route: %v, want Unimplemented route_not_found", err)
	}

	// Not gRPC: the filter's answer as it made it, with no grpc-status.
	req, _ := http.NewRequest("GET", p.URL+"/plain", nil)
	req.Header.Set("x-local", "401")
	req.Header.Set("x-local-grpc", "16")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("grpc-status") != "" || resp.Header.Get("content-type") != "text/plain" {
		t.Errorf("plain request: %d %v, want 401, text/plain, no grpc-status", resp.StatusCode, resp.Header)
	}
}
