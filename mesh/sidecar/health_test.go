package sidecar_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/testaddr"
	"github.com/wasmgate/wasmgate/mesh/sidecar"
)

// TestSidecarHealthCheck: orders' sidecar probes its app
// (--health-check /healthz): it registers orders only once the app is
// healthy, deregisters it while the app fails its probes, so that web's
// calls get 503 (no endpoint) rather than the app's errors, and registers
// it again when the app recovers.
func TestSidecarHealthCheck(t *testing.T) {
	m := startProcessMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var healthy atomic.Bool
	ordersApp := appPort(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if !healthy.Load() {
				http.Error(w, "starting", http.StatusServiceUnavailable)
			}
			return
		}
		fmt.Fprint(w, "orders")
	})
	ordersAdmin := testaddr.Free(t)
	m.start(t, "orders", ordersApp, testaddr.Free(t), "--health-check", "/healthz", "--health-check-interval", "100ms", "--admin", ordersAdmin)
	// The sidecar's metric says what the registry does.
	gauge := func() string {
		resp, err := http.Get("http://" + ordersAdmin + "/metrics")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "wasmgate_sidecar_app_healthy ") {
				return line
			}
		}
		return "no wasmgate_sidecar_app_healthy"
	}
	webOut := testaddr.Free(t)
	m.start(t, "web", port(t, testaddr.Free(t)), webOut, "--calls", "orders")

	registered := func() int {
		l, err := m.admin.Endpoints(ctx, "orders.default")
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	until := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 15s\n%s", what, m.sidecars.output())
			}
		}
	}
	// web's sidecar serves; orders' app is not healthy yet, so orders is
	// not registered, however long it waits.
	until("web's sidecar serving", func() bool {
		got, err := get(webOut, "orders", "/")
		return err == nil && strings.HasPrefix(got, "503 ")
	})
	time.Sleep(time.Second)
	if n := registered(); n != 0 {
		t.Fatalf("orders registered while its app was unhealthy: %d endpoints", n)
	}
	if g := gauge(); g != "wasmgate_sidecar_app_healthy 0" {
		t.Errorf("while starting: %s", g)
	}
	healthy.Store(true)
	until("web -> orders once orders is healthy", func() bool { got, _ := get(webOut, "orders", "/"); return got == "200 orders" })
	if g := gauge(); g != "wasmgate_sidecar_app_healthy 1" {
		t.Errorf("once healthy: %s", g)
	}
	// Unhealthy: deregistered after three failed probes; web's calls find
	// no endpoint.
	healthy.Store(false)
	until("orders deregistered", func() bool { return registered() == 0 })
	until("web -> orders without an endpoint", func() bool { got, _ := get(webOut, "orders", "/"); return strings.HasPrefix(got, "503 ") })
	if g := gauge(); g != "wasmgate_sidecar_app_healthy 0" {
		t.Errorf("once unhealthy: %s", g)
	}
	healthy.Store(true)
	until("web -> orders after it recovered", func() bool { got, _ := get(webOut, "orders", "/"); return got == "200 orders" })
	out := m.sidecars.output()
	for _, want := range []string{"the app is unhealthy; its address is deregistered", "the app is healthy again"} {
		if !strings.Contains(out, want) {
			t.Errorf("orders' sidecar did not log %q", want)
		}
	}
}

// TestHealthCheckSettings: a health check is checked with its field
// paths, and the flag's forms are read.
func TestHealthCheckSettings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		h     sidecar.HealthCheck
		proto string
		want  string
	}{
		{"neither", sidecar.HealthCheck{}, "http", "sidecar.health_check: needs one of http"},
		{"both", sidecar.HealthCheck{HTTP: "/h", TCP: true}, "http", "sidecar.health_check: needs one of http"},
		{"http of grpc", sidecar.HealthCheck{HTTP: "/h"}, "grpc", "sidecar.health_check.http: an app of protocol grpc is probed with tcp: true"},
		{"grpc of http", sidecar.HealthCheck{GRPC: true}, "http", "sidecar.health_check.grpc: an app of protocol http serves no gRPC"},
		{"grpc service alone", sidecar.HealthCheck{TCP: true, GRPCService: "ledger"}, "grpc", "sidecar.health_check.grpc_service: is for grpc: true only"},
		{"no path", sidecar.HealthCheck{HTTP: "healthz"}, "http", "sidecar.health_check.http: \"healthz\" is not a path"},
		{"fast", sidecar.HealthCheck{TCP: true, Interval: config.Duration(10 * time.Millisecond)}, "http", "sidecar.health_check.interval: must be 100ms to 5m"},
		{"timeout", sidecar.HealthCheck{TCP: true, Interval: config.Duration(time.Second), Timeout: config.Duration(2 * time.Second)}, "tcp", "sidecar.health_check.timeout"},
		{"threshold", sidecar.HealthCheck{TCP: true, UnhealthyThreshold: 101}, "tcp", "sidecar.health_check.unhealthy_threshold"},
	} {
		h := tc.h
		s := sidecar.Settings{Service: "orders", AppPort: 8080, Inbound: "10.0.0.1:15006", Protocol: tc.proto, HealthCheck: &h}
		s.Normalize()
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	ok := sidecar.Settings{Service: "orders", AppPort: 8080, Inbound: "10.0.0.1:15006", HealthCheck: &sidecar.HealthCheck{HTTP: "/healthz"}}
	ok.Normalize()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if h := ok.HealthCheck; time.Duration(h.Interval) != 5*time.Second || time.Duration(h.Timeout) != time.Second || h.UnhealthyThreshold != 3 || h.HealthyThreshold != 1 {
		t.Errorf("defaults: %+v", h)
	}
	for v, want := range map[string]sidecar.HealthCheck{"tcp": {TCP: true}, "/ready": {HTTP: "/ready"}, "grpc": {GRPC: true},
		"grpc:ledger.v1.Ledger": {GRPC: true, GRPCService: "ledger.v1.Ledger"}} {
		if h, err := sidecar.ParseHealthCheck(v); err != nil || *h != want {
			t.Errorf("ParseHealthCheck(%q) = %+v, %v", v, h, err)
		}
	}
	if _, err := sidecar.ParseHealthCheck("ready"); err == nil {
		t.Error("ParseHealthCheck accepted a path without /")
	}
}
