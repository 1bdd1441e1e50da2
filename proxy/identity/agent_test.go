package identity_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/proxy/identity"
)

// TestAgentServesFromStateWhileAway restarts a proxy while the control
// plane is down: the certificate kept on disk serves at once, without a
// join token, and the expiry metric counts down from it. As expiry nears
// with the control plane still away, the agent warns.
func TestAgentServesFromStateWhileAway(t *testing.T) {
	const life = 4 * time.Second
	cp := startMeshCP(t, life)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := filepath.Join(t.TempDir(), "state")
	tok, err := cp.client(t).CreateToken(ctx, api.TokenRequest{Namespace: "shop", ServiceAccount: "a"})
	if err != nil {
		t.Fatal(err)
	}
	bundle := cp.bundle(t)
	server := cp.srv.APIURL()
	first, err := identity.New(identity.Options{Server: server, BootstrapRoots: bundle, JoinToken: tok.Token, Name: "a", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopFirst := context.WithCancel(ctx)
	if err := first.Start(ctx, runCtx); err != nil {
		t.Fatal(err)
	}
	stopFirst()
	cp.stop()

	core, logs := observer.New(zapcore.InfoLevel)
	reg := prometheus.NewRegistry()
	second, err := identity.New(identity.Options{Server: server, StateDir: dir, Name: "a", Registerer: reg, Logger: zap.New(core),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.Ready():
	default:
		t.Fatal("the stored certificate is not served at once")
	}
	if second.Serial() != first.Serial() || second.ID().String() != "spiffe://wasmgate.local/ns/shop/sa/a" {
		t.Fatalf("restarted on %s %s, want %s", second.ID(), second.Serial(), first.Serial())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var left float64
	for _, mf := range mfs {
		if mf.GetName() == "wasmgate_identity_certificate_expiry_seconds" {
			left = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if left <= 0 || left > life.Seconds() {
		t.Fatalf("expiry metric = %v, want in (0, %v]", left, life.Seconds())
	}
	go second.Run(ctx)
	deadline := time.Now().Add(2 * life)
	for logs.FilterMessage("the workload certificate expires soon and cannot be renewed").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no warning as expiry neared; logs: %v", messages(logs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func messages(l *observer.ObservedLogs) []string {
	var out []string
	for _, e := range l.All() {
		out = append(out, e.Message)
	}
	return out
}

func TestAgentNeedsAToken(t *testing.T) {
	_, err := identity.New(identity.Options{Server: "https://127.0.0.1:1", BootstrapRoots: nil, StateDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "bootstrap roots") {
		t.Fatalf("no roots: %v", err)
	}
	if _, err := identity.New(identity.Options{Server: "http://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "https") {
		t.Fatalf("plain http: %v", err)
	}
}

// TestAgentRefusedToken logs the refusal and keeps asking without
// issuing anything.
func TestAgentRefusedToken(t *testing.T) {
	cp := startMeshCP(t, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tok, err := cp.client(t).CreateToken(ctx, api.TokenRequest{Namespace: "shop", ServiceAccount: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.client(t).RevokeToken(ctx, tok.Token); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	a, err := identity.New(identity.Options{Server: cp.srv.APIURL(), BootstrapRoots: cp.bundle(t), JoinToken: tok.Token, Name: "a",
		Logger: zap.New(core), MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go a.Run(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for logs.FilterMessage("the join token was refused; ask for a new one (wasmgate ctl token create)").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no refusal logged: %v", messages(logs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	e := logs.FilterMessage("the join token was refused; ask for a new one (wasmgate ctl token create)").All()[0]
	if !strings.Contains(e.ContextMap()["error"].(string), "unknown or revoked") {
		t.Fatalf("refusal: %v", e.ContextMap())
	}
	select {
	case <-a.Ready():
		t.Fatal("a revoked token got a certificate")
	default:
	}
}
