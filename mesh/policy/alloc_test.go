//go:build !race

package policy_test

import (
	"net/netip"
	"testing"

	"github.com/wasmgate/wasmgate/mesh/policy"
)

// TestEvaluateDoesNotAllocate holds the hot path to zero allocations, for
// every kind of outcome.
func TestEvaluateDoesNotAllocate(t *testing.T) {
	set := mustCompile(t, demo)
	tab := set.For("payments", "payments")
	reqs := []policy.Request{
		{Principal: id("ops-eu", "oncall"), Method: "GET", Path: "/admin/x?y=1", Headers: headers{"x-ticket": "OPS-12"}, SourceIP: netip.MustParseAddr("10.0.0.1"), Port: 8080},
		{Principal: id("shop", "orders"), Method: "DELETE", Path: "/pay"},
		{Principal: id("shop", "web"), Method: "POST", Path: "/pay", Host: "payments.payments:8080"},
		{Method: "GET", Path: "/admin"},
	}
	for i := range reqs {
		if n := testing.AllocsPerRun(200, func() { tab.Evaluate(&reqs[i]) }); n != 0 {
			t.Errorf("request %d: %v allocations per evaluation, want 0", i, n)
		}
	}
}

func TestGuardDecideDoesNotAllocate(t *testing.T) {
	d, err := policy.Parse([]byte(demo))
	if err != nil {
		t.Fatal(err)
	}
	g := policy.NewGuard("payments", "payments")
	if err := g.Load(1, d.AuthorizationPolicies, d.PeerAuthentications); err != nil {
		t.Fatal(err)
	}
	req := &policy.Request{Principal: id("shop", "orders"), Method: "POST", Path: "/pay"}
	if n := testing.AllocsPerRun(200, func() { g.Decide(req) }); n != 0 {
		t.Fatalf("%v allocations per decision, want 0", n)
	}
}

// TestAllowRateDoesNotAllocate: a rate limit check costs no allocation,
// with no policy, through an identity's bucket and through an override's.
func TestAllowRateDoesNotAllocate(t *testing.T) {
	g := policy.NewGuard("payments", "payments")
	orders := id("shop", "orders")
	if n := testing.AllocsPerRun(200, func() { g.AllowRate(orders) }); n != 0 {
		t.Fatalf("no policy: %v allocations per check, want 0", n)
	}
	if err := g.LoadRateLimits([]policy.RateLimitPolicy{{Name: "l", Namespace: "payments", Service: "payments",
		Total: &policy.Rate{RequestsPerSecond: maxRate}, Identity: &policy.Rate{RequestsPerSecond: maxRate},
		Overrides: []policy.RateOverride{{RequestsPerSecond: maxRate, Principals: []string{id("shop", "web")}}}}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{orders, id("shop", "web"), ""} {
		if n := testing.AllocsPerRun(200, func() { g.AllowRate(p) }); n != 0 {
			t.Errorf("caller %q: %v allocations per check, want 0", p, n)
		}
	}
}

const maxRate = 1_000_000
