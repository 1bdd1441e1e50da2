package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/ca"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/proxy/identity"
)

// TestCtlTokenAndCA drives the token and ca commands against a control
// plane with the mesh on, with a proxy's identity agent joining by the
// token the CLI made and following a rotation the CLI drives.
func TestCtlTokenAndCA(t *testing.T) {
	const admin = "ctl-ca-admin-secret-0123456789"
	key, err := secret.ParseKey(secret.NewKeyText())
	if err != nil {
		t.Fatal(err)
	}
	s, err := controlplane.Start(context.Background(), controlplane.Options{DataDir: t.TempDir(), EtcdClientAddr: "127.0.0.1:0",
		EtcdPeerAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Logger: zap.NewNop(), SecretKey: key, Mesh: true,
		Tokens: []api.Token{{Name: "ops", Role: api.RoleAdmin, Secret: admin}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctl := func(args ...string) (string, error) {
		return runCLI(t, append([]string{"ctl", "--server", s.APIURL(), "--token", admin, "--ca", s.BundlePath()}, args...)...)
	}

	if _, err := ctl("token", "create", "--service-account", "orders"); err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Fatalf("token create without --namespace: %v", err)
	}
	out, err := ctl("token", "create", "--namespace", "shop", "--service-account", "orders", "--ttl", "10m")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	tok := strings.Fields(out)[0]
	if !strings.HasPrefix(tok, "wgjt.") || !strings.Contains(out, "spiffe://wasmgate.local/ns/shop/sa/orders: 1 use(s)") {
		t.Fatalf("token create printed %q", out)
	}
	if out, err = ctl("token", "list"); err != nil || !strings.Contains(out, "spiffe://wasmgate.local/ns/shop/sa/orders") || strings.Contains(out, tok) {
		t.Fatalf("token list: %v\n%s", err, out)
	}

	roots, err := os.ReadFile(s.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ag, err := identity.New(identity.Options{Server: s.APIURL(), BootstrapRoots: roots, JoinToken: tok, Name: "orders-1",
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, BundleWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	if err := ag.Start(sctx, ctx); err != nil {
		t.Fatal(err)
	}
	if out, err = ctl("ca", "status"); err != nil || !strings.Contains(out, "orders-1") || !strings.Contains(out, ag.Serial()) || !strings.Contains(out, "rotation phase stable") {
		t.Fatalf("ca status: %v\n%s", err, out)
	}

	if out, err = ctl("ca", "rotate", "--all", "--timeout", "60s"); err != nil {
		t.Fatalf("ca rotate --all: %v\n%s", err, out)
	}
	for _, want := range []string{"rotation: phase added", "rotation: phase activated", "rotation: phase stable"} {
		if !strings.Contains(out, want) {
			t.Fatalf("ca rotate --all printed no %q:\n%s", want, out)
		}
	}
	out, err = ctl("-o", "json", "ca", "status")
	if err != nil {
		t.Fatal(err)
	}
	var st ca.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("ca status -o json: %v\n%s", err, out)
	}
	if len(st.Authorities) != 1 || len(st.Proxies) != 1 || st.Proxies[0].Authority != st.Signer {
		t.Fatalf("after the rotation: %+v", st)
	}
	if out, err = ctl("token", "revoke", tok); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("token revoke: %v\n%s", err, out)
	}
	if _, err = ctl("token", "revoke", tok); err == nil {
		t.Fatal("a token revoked twice")
	}
}
