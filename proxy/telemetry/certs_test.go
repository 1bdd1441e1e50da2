package telemetry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wasmgate/wasmgate/config"
)

func TestCertificateCollector(t *testing.T) {
	dir := t.TempDir()
	writeTestPKI(t, dir)
	pemBytes, err := os.ReadFile(filepath.Join(dir, "server.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Certificates: []config.Certificate{{Name: "edge", CertPEM: string(pemBytes)}, {Name: "bad", CertPEM: "x"}}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(CertificateCollector(func() *config.Config { return cfg }))
	n, err := testutil.GatherAndCount(reg)
	if err != nil || n != 1 {
		t.Fatalf("%d series, %v; want 1", n, err)
	}
	mfs, _ := reg.Gather()
	m := mfs[0].Metric[0]
	if m.Label[0].GetValue() != "edge" || m.GetGauge().GetValue() < 1e9 {
		t.Errorf("series %v", m)
	}
	if !strings.HasPrefix(mfs[0].GetName(), "wasmgate_certificate_expiry") {
		t.Error(mfs[0].GetName())
	}
}
