package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunSidecarSettings: bad sidecar settings, from flags or from the
// file's `sidecar:` section, exit 2 naming the field, before anything
// starts.
func TestRunSidecarSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(file, []byte("sidecar:\n  service: orders\n  app_port: 8080\n  inbound_mode: loose\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no service", []string{"run", "--sidecar", "--app-port", "8080", "--inbound", "10.0.0.1:15006"}, "sidecar.service: is required"},
		{"no app port", []string{"run", "--sidecar", "--service", "orders", "--inbound", "10.0.0.1:15006"}, "sidecar.app_port: must be a port"},
		{"wildcard without announce", []string{"run", "--sidecar", "--service", "orders", "--app-port", "8080"}, "sidecar.announce"},
		{"from the file", []string{"run", "--sidecar", "-c", file, "--inbound", "10.0.0.1:15006"}, "sidecar.inbound_mode: unknown mode \"loose\""},
		{"file field misspelt", []string{"run", "--sidecar", "-c", writeFile(t, "sidecar:\n  app-port: 8080\n")}, "field app-port not found"},
		{"negative concurrency", []string{"run", "--sidecar", "--service", "orders", "--app-port", "8080", "--inbound", "10.0.0.1:15006", "--concurrency", "-2"}, "sidecar.concurrency: must be 1 to 1024 threads"},
		{"concurrency from the file", []string{"run", "--sidecar", "-c", writeFile(t, "sidecar:\n  service: orders\n  app_port: 8080\n  concurrency: 5000\n"), "--inbound", "10.0.0.1:15006"}, "sidecar.concurrency"},
		{"no identity", []string{"run", "--sidecar", "--service", "orders", "--app-port", "8080", "--inbound", "10.0.0.1:15006"}, "--sidecar needs a workload identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newRootCmd()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(tc.args)
			err := cmd.Execute()
			if err == nil || exitCode(err) != exitInvalid || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (exit %d), want exit 4 with %q", err, exitCode(err), tc.want)
			}
		})
	}
}

func writeFile(t *testing.T, data string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "f.yaml")
	if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSidecarHealthCheckFlags: --health-check says how the app is probed
// over the file's health_check, whose interval and thresholds stay, and
// --health-check-interval replaces the interval.
func TestSidecarHealthCheckFlags(t *testing.T) {
	file := writeFile(t, "sidecar:\n  service: ledger\n  app_port: 8080\n  protocol: grpc\n  inbound: 10.0.0.1:15006\n"+
		"  health_check: {tcp: true, unhealthy_threshold: 5, interval: 2s}\n")
	f := &sidecarFlags{health: "grpc:ledger.v1.Ledger", healthEvery: 500 * time.Millisecond}
	s, err := f.settings(file)
	if err != nil {
		t.Fatal(err)
	}
	h := s.HealthCheck
	if h == nil || h.HTTP != "" || h.TCP || !h.GRPC || h.GRPCService != "ledger.v1.Ledger" || h.UnhealthyThreshold != 5 || h.Interval.D() != 500*time.Millisecond {
		t.Fatalf("health check: %+v", h)
	}
	if _, err := (&sidecarFlags{healthEvery: time.Second}).settings(file); err != nil {
		t.Fatalf("an interval over the file's check: %v", err)
	}
	if _, err := (&sidecarFlags{s: f.s, healthEvery: time.Second}).settings(""); err == nil || !strings.Contains(err.Error(), "--health-check-interval") {
		t.Fatalf("an interval without a check: %v", err)
	}
}
