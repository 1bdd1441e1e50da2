package policy_test

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wasmgate/wasmgate/mesh/policy"
)

// TestGuardSwapsUnderLoad: requests decided while policies change each
// see one whole policy set, never a mix; a bad set changes nothing.
func TestGuardSwapsUnderLoad(t *testing.T) {
	g := policy.NewGuard("payments", "payments")
	web := &policy.Request{Principal: id("shop", "web"), Method: "POST", Path: "/pay"}
	if d := g.Decide(web); !d.Allowed || d.Reason != policy.NoPolicy || g.Mode(8080).Mode != policy.Strict {
		t.Fatalf("before any policy: %s, %v", d, g.Mode(8080))
	}
	denyWeb := []policy.AuthorizationPolicy{{Name: "deny-web", Namespace: "payments", Action: "DENY",
		Rules: []policy.Rule{{From: []policy.Source{{Principals: []string{id("shop", "web")}}}}}}}
	allowWeb := []policy.AuthorizationPolicy{{Name: "allow-web", Namespace: "payments", Service: "payments",
		Rules: []policy.Rule{{From: []policy.Source{{Principals: []string{id("shop", "web")}}}}}}}
	other := policy.AuthorizationPolicy{Name: "other", Namespace: "shop", Action: "deny", Rules: []policy.Rule{{}}}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				d := g.Decide(web)
				switch {
				case d.Policy == "deny-web" && !d.Allowed:
				case d.Policy == "allow-web" && d.Allowed:
				case d.Reason == policy.NoPolicy && d.Allowed:
				default:
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 200 {
		set := denyWeb
		if i%2 == 1 {
			set = allowWeb
		}
		if err := g.Load(int64(i+1), append(set, other), nil); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d decisions matched no whole policy set", bad.Load())
	}
	if d := g.Decide(web); d.Policy != "allow-web" || g.Revision() != 200 {
		t.Fatalf("after the last load: %s at revision %d", d, g.Revision())
	}
	broken := []policy.AuthorizationPolicy{{Name: "broken", Namespace: "payments", Action: "maybe"}}
	if err := g.Load(201, broken, []policy.PeerAuthentication{{Name: "p", Namespace: "payments", Mode: "permissive"}}); err == nil {
		t.Fatal("a broken set loaded")
	}
	if d := g.Decide(web); d.Policy != "allow-web" || g.Revision() != 200 || g.Mode(1).Mode != policy.Strict {
		t.Fatalf("a broken set changed the guard: %s at revision %d", d, g.Revision())
	}
	if err := g.Load(202, allowWeb, []policy.PeerAuthentication{{Name: "p", Namespace: "payments", Mode: "PERMISSIVE"}}); err != nil {
		t.Fatal(err)
	}
	if r := g.Mode(1); r.Mode != policy.Permissive || r.Source != "p" {
		t.Fatalf("Mode = %+v", r)
	}
}
