package resource_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

func meshBase() *config.Config {
	return &config.Config{
		Listeners:    []config.Listener{{Name: "main", Address: "127.0.0.1:8080"}},
		VirtualHosts: []config.VirtualHost{{Name: "web", Domains: []string{"*"}, Routes: []config.Route{{Cluster: "api"}}}},
		Clusters:     []config.Cluster{{Name: "api", Endpoints: []config.Endpoint{{Address: "127.0.0.1:9001"}}}},
	}
}

func allowOrders(paths ...string) *policy.AuthorizationPolicy {
	return &policy.AuthorizationPolicy{Name: "payments-from-orders", Namespace: "payments", Service: "payments", Action: "ALLOW",
		Rules: []policy.Rule{{
			From: []policy.Source{{Principals: []string{"spiffe://wasmgate.local/ns/shop/sa/orders"}}},
			To:   []policy.Operation{{Paths: paths}},
		}}}
}

// TestMeshPoliciesInTheStore: policies are resources like the rest:
// validated before they are written (a bad one changes nothing and its
// error names the field), versioned, in the history, and rolled back.
func TestMeshPoliciesInTheStore(t *testing.T) {
	ctx := context.Background()
	st := store.New(etcdtest.Client(t), etcdtest.Prefix(t))
	if _, err := st.Apply(ctx, store.Change{Put: resource.Split(meshBase())}); err != nil {
		t.Fatal(err)
	}
	apRef := resource.Ref{Kind: resource.AuthorizationPolicies, Name: "payments-from-orders"}
	paRef := resource.Ref{Kind: resource.PeerAuthentications, Name: "shop"}
	first, err := st.Apply(ctx, store.Change{Author: "sec", Put: resource.Set{
		apRef: allowOrders("/pay"),
		paRef: &policy.PeerAuthentication{Name: "shop", Namespace: "shop", Mode: "STRICT"},
	}})
	if err != nil {
		t.Fatalf("applying policies: %v", err)
	}
	if len(first.Ops) != 2 {
		t.Fatalf("ops = %+v, want two creates", first.Ops)
	}
	v, rev, err := st.Get(ctx, apRef)
	if err != nil || rev != first.Revision {
		t.Fatalf("Get = %v, %d, %v", v, rev, err)
	}
	if ap := v.(*policy.AuthorizationPolicy); ap.Action != policy.Allow || ap.Rules[0].To[0].Paths[0] != "/pay" {
		t.Fatalf("stored policy = %+v, want it normalized to allow", ap)
	}
	// The same policy spelled the Istio way is the same resource.
	if res, err := st.Apply(ctx, store.Change{Put: resource.Set{apRef: allowOrders("/pay")}}); err != nil || len(res.Ops) != 0 {
		t.Fatalf("re-apply = %+v, %v; want no change", res, err)
	}

	// A malformed policy is refused with its field path, and nothing changes.
	bad := allowOrders("/pay", "refund")
	bad.Rules[0].From[0].Principals = append(bad.Rules[0].From[0].Principals, "spiffe://td/ns/only")
	_, err = st.Apply(ctx, store.Change{Put: resource.Set{apRef: bad, paRef: &policy.PeerAuthentication{Name: "shop", Namespace: "shop", Mode: "off"}}})
	var ve *store.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("applying a bad policy: %v, want a ValidationError", err)
	}
	want := map[string]bool{
		"authorization_policies/payments-from-orders rules[0].from[0].principals[1]": true,
		"authorization_policies/payments-from-orders rules[0].to[0].paths[1]":        true,
		"authentication_policies/shop mode":                                          true,
	}
	for _, fe := range ve.Errors {
		if !want[fe.Resource+" "+fe.Path] {
			t.Errorf("unexpected error %s", fe)
		}
		delete(want, fe.Resource+" "+fe.Path)
	}
	if len(want) > 0 {
		t.Errorf("missing errors for %v in %v", want, err)
	}
	// Two peer authentications for one scope are refused too.
	_, err = st.Apply(ctx, store.Change{Put: resource.Set{{Kind: resource.PeerAuthentications, Name: "shop-2"}: &policy.PeerAuthentication{Name: "shop-2", Namespace: "shop", Mode: "permissive"}}})
	if !errors.As(err, &ve) || ve.Errors[0].Resource != "authentication_policies/shop-2" || ve.Errors[0].Path != "service" {
		t.Fatalf("a second peer authentication for one namespace: %v", err)
	}
	// So are two outbound traffic policies for one scope, and a mode
	// that is not one.
	otp := func(name, mode string) resource.Set {
		return resource.Set{{Kind: resource.OutboundTrafficPolicies, Name: name}: &policy.OutboundTrafficPolicy{Name: name, Namespace: "shop", Mode: policy.OutboundMode(mode)}}
	}
	if _, err := st.Apply(ctx, store.Change{Put: otp("shop-egress", "ALLOW_ANY")}); err != nil {
		t.Fatalf("an outbound traffic policy: %v", err)
	}
	_, err = st.Apply(ctx, store.Change{Put: otp("shop-egress-2", "registry_only")})
	if !errors.As(err, &ve) || ve.Errors[0].Resource != "authorization_outbound/shop-egress-2" || ve.Errors[0].Path != "service" {
		t.Fatalf("a second outbound traffic policy for one namespace: %v", err)
	}
	_, err = st.Apply(ctx, store.Change{Put: otp("shop-egress", "deny")})
	if !errors.As(err, &ve) || ve.Errors[0].Path != "mode" {
		t.Fatalf("an outbound traffic policy of mode deny: %v", err)
	}
	if _, err := st.Apply(ctx, store.Change{Delete: []resource.Ref{{Kind: resource.OutboundTrafficPolicies, Name: "shop-egress"}}}); err != nil {
		t.Fatal(err)
	}
	// One service route per service.
	route := func(name string) resource.Set {
		return resource.Set{{Kind: resource.ServiceRoutes, Name: name}: &policy.ServiceRoute{Name: name, Namespace: "shop", Service: "orders",
			Rules: []policy.RouteRule{{Backends: []policy.RouteBackend{{Version: "v2", Weight: 1}}}}}}
	}
	if _, err := st.Apply(ctx, store.Change{Put: route("orders-canary")}); err != nil {
		t.Fatalf("a service route: %v", err)
	}
	_, err = st.Apply(ctx, store.Change{Put: route("orders-canary-2")})
	if !errors.As(err, &ve) || ve.Errors[0].Resource != "attached_routes/orders-canary-2" || ve.Errors[0].Path != "service" {
		t.Fatalf("a second service route for one service: %v", err)
	}
	if _, err := st.Apply(ctx, store.Change{Delete: []resource.Ref{{Kind: resource.ServiceRoutes, Name: "orders-canary"}}}); err != nil {
		t.Fatal(err)
	}
	if _, rev, _ := st.Get(ctx, apRef); rev != first.Revision {
		t.Fatalf("a refused change moved the policy to revision %d", rev)
	}

	// An update is versioned and in the history; a rollback restores it.
	second, err := st.Apply(ctx, store.Change{Author: "sec", Put: resource.Set{apRef: allowOrders("/pay", "/refund/*")}})
	if err != nil || len(second.Ops) != 1 || second.Ops[0].Action != "update" {
		t.Fatalf("update = %+v, %v", second, err)
	}
	h, err := st.History(ctx, 1)
	if err != nil || h[0].Revision != second.Revision || h[0].Ops[0].Resource != apRef.String() {
		t.Fatalf("history = %+v, %v", h, err)
	}
	if _, err := st.Rollback(ctx, first.Revision, store.Change{Author: "sec"}); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	v, _, err = st.Get(ctx, apRef)
	if err != nil || len(v.(*policy.AuthorizationPolicy).Rules[0].To[0].Paths) != 1 {
		t.Fatalf("after rollback = %+v, %v", v, err)
	}
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	aps, pas := resource.Policies(snap.Resources)
	if len(aps) != 1 || len(pas) != 1 || pas[0].Mode != policy.Strict {
		t.Fatalf("policies in the snapshot = %+v %+v", aps, pas)
	}
	// The mesh kinds stay outside the range every proxy watches.
	keys := st.Keys()
	begin, end := keys.ConfigRange()
	for _, k := range resource.MeshKinds {
		if key := keys.Kind(k); key >= begin && key < end {
			t.Errorf("%s is inside the proxies' watched range", key)
		}
	}
	// And deleting one is a change like any other.
	if res, err := st.Apply(ctx, store.Change{Delete: []resource.Ref{paRef}}); err != nil || res.Ops[0].Action != "delete" {
		t.Fatalf("delete = %+v, %v", res, err)
	}
}

func TestParseMeshKinds(t *testing.T) {
	for in, want := range map[string]resource.Kind{
		"authorization_policy": resource.AuthorizationPolicies, "AuthorizationPolicy": resource.AuthorizationPolicies,
		"peer-authentication": resource.PeerAuthentications, "PeerAuthentication": resource.PeerAuthentications,
		"authentication_policies": resource.PeerAuthentications,
		"outbound_traffic_policy": resource.OutboundTrafficPolicies, "OutboundTrafficPolicy": resource.OutboundTrafficPolicies,
		"service_route": resource.ServiceRoutes, "sr": resource.ServiceRoutes,
	} {
		if got, err := resource.ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %v, %v", in, got, err)
		}
	}
	if resource.PeerAuthentications.Singular() != "peer authentication" {
		t.Errorf("Singular = %q", resource.PeerAuthentications.Singular())
	}
}

// TestMeshOnlyStore: a control plane of a mesh holds policies and
// nothing for proxies: its last policy can go, and a Wasm plugin is
// refused until its module is stored, with the field's path.
func TestMeshOnlyStore(t *testing.T) {
	ctx := context.Background()
	st := store.New(etcdtest.Client(t), etcdtest.Prefix(t))
	ref := resource.Ref{Kind: resource.AuthorizationPolicies, Name: "payments-from-orders"}
	if _, err := st.Apply(ctx, store.Change{Put: resource.Set{ref: allowOrders("/pay")}}); err != nil {
		t.Fatalf("a policy alone: %v", err)
	}
	module := []byte("\x00asm\x01\x00\x00\x00")
	sum := sha256.Sum256(module)
	sha := hex.EncodeToString(sum[:])
	wp := resource.Ref{Kind: resource.WasmPlugins, Name: "orders-waf"}
	plugin := resource.Set{wp: &policy.WasmPlugin{Name: "orders-waf", Namespace: "shop", Service: "orders", SHA256: sha}}
	_, err := st.Apply(ctx, store.Change{Put: plugin})
	var ve *store.ValidationError
	if !errors.As(err, &ve) || ve.Errors[0].Resource != "attached_plugins/orders-waf" || ve.Errors[0].Path != "sha256" {
		t.Fatalf("a Wasm plugin whose module is not stored: %v", err)
	}
	if _, err := st.PutBlob(ctx, module); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(ctx, store.Change{Put: plugin}); err != nil {
		t.Fatalf("a Wasm plugin whose module is stored: %v", err)
	}
	v, _, err := st.Get(ctx, wp)
	if err != nil || v.(*policy.WasmPlugin).Mode != policy.WasmInbound {
		t.Fatalf("the stored plugin: %+v %v, want mode inbound by default", v, err)
	}
	if _, err := st.Apply(ctx, store.Change{Delete: []resource.Ref{ref, wp}}); err != nil {
		t.Fatalf("deleting the last policies: %v", err)
	}
}
