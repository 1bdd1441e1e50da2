package identity_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/identity"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// TestRotationEvent lets a workload certificate of a real CA, two seconds
// long, renew at half-life: the renewal is a certificate_rotated event in
// a file sink, naming the new certificate's SPIFFE ID, serial and expiry.
func TestRotationEvent(t *testing.T) {
	cp := startMeshCP(t, 2*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	file := filepath.Join(t.TempDir(), "events.jsonl")
	pipe, err := telemetry.New(&config.Telemetry{
		Sinks: []config.TelemetrySink{{Name: "file", Type: "file", File: &config.FileSink{Path: file}}},
		Event: []string{"file"},
	}, telemetry.WithFlushEvery(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.Shutdown(context.Background())
	a := startAgent(t, ctx, cp, "a", zap.NewNop())
	first := a.Serial()
	a.OnRotation(func(r identity.Rotation) { pipe.CertificateRotated(r.ID, r.Serial, r.NotAfter, r.Authority) })

	var ev struct {
		Kind, Type string
		Attrs      struct {
			SpiffeID string `json:"spiffe_id"`
			Serial   string
			NotAfter string `json:"not_after"`
		}
	}
	waitFor(t, "a certificate_rotated event in the file", 10*time.Second, func() bool {
		data, _ := os.ReadFile(file)
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("%q: %v", sc.Text(), err)
			}
			if ev.Type == telemetry.EventCertificateRotated {
				return true
			}
		}
		return false
	})
	notAfter, err := time.Parse(time.RFC3339, ev.Attrs.NotAfter)
	if err != nil {
		t.Fatalf("not_after %q: %v", ev.Attrs.NotAfter, err)
	}
	if ev.Kind != "event" || ev.Attrs.SpiffeID != "spiffe://wasmgate.local/ns/shop/sa/a" || ev.Attrs.Serial == first ||
		ev.Attrs.Serial == "" || !notAfter.After(time.Now()) {
		t.Errorf("event %+v; first serial %s", ev, first)
	}
}

// TestMeshFlowRecord sends a request from proxy A to proxy B over the
// mesh's mTLS: B's flow record of the connection carries the TLS version
// and cipher suite, A's SPIFFE ID as the source and B's as the
// destination.
func TestMeshFlowRecord(t *testing.T) {
	cp := startMeshCP(t, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agentA := startAgent(t, ctx, cp, "a", zap.NewNop())
	agentB := startAgent(t, ctx, cp, "b", zap.NewNop())
	app := startApp(t)

	var out bytes.Buffer
	telCfg := &config.Telemetry{Sinks: []config.TelemetrySink{{Name: "out", Type: "stdout"}}, Flow: []string{"out"}}
	pipe, err := telemetry.New(telCfg, telemetry.WithStdout(&out))
	if err != nil {
		t.Fatal(err)
	}
	apply := func(o proxy.Options, yaml string) *proxy.Server {
		cfg, err := config.Parse([]byte(yaml), "flow.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if o.Telemetry != nil {
			cfg.Telemetry = telCfg
		}
		s := proxy.NewServer(o)
		if err := s.Apply(ctx, cfg, "1"); err != nil {
			t.Fatal(err)
		}
		return s
	}
	b := apply(proxy.Options{Mesh: agentB, Telemetry: pipe}, hopConfig(true, app, false, "", 0))
	a := apply(proxy.Options{Mesh: agentA}, hopConfig(false, b.Addr("in").String(), true, "spiffe://wasmgate.local/ns/shop/sa/b", 0))
	resp, err := http.Get("http://" + a.Addr("in").String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// A's upstream connection closes with A; B's close of it emits the
	// record.
	_ = a.Shutdown(ctx)
	_ = b.Shutdown(ctx)
	if err := pipe.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	for line := range bytes.Lines(out.Bytes()) {
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if rec["source_identity"] != nil {
			break
		}
	}
	if rec["kind"] != "flow" || rec["tls_version"] != "TLS 1.3" || rec["tls_cipher"] == nil ||
		rec["source_identity"] != "spiffe://wasmgate.local/ns/shop/sa/a" ||
		rec["destination_identity"] != "spiffe://wasmgate.local/ns/shop/sa/b" {
		t.Errorf("flow record of the mesh hop: %v\nall: %s", rec, out.String())
	}
}
