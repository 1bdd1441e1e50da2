package policy_test

import (
	"fmt"
	"testing"

	"github.com/wasmgate/wasmgate/mesh/policy"
)

// TestRateLimits: each caller identity has its bucket, an override's
// callers theirs at their own rate, and all together the total's; a
// refusal says which policy and when to come back; a reload of the same
// policy keeps its buckets, a changed one starts afresh. The rates are
// low enough (a token each half second or slower) that no bucket refills
// during a run.
func TestRateLimits(t *testing.T) {
	g := policy.NewGuard("shop", "orders")
	limit := func(total, identity, web int) []policy.RateLimitPolicy {
		return []policy.RateLimitPolicy{{Name: "orders-limits", Namespace: "shop", Service: "orders",
			Total: &policy.Rate{RequestsPerSecond: total}, Identity: &policy.Rate{RequestsPerSecond: identity},
			Overrides: []policy.RateOverride{{RequestsPerSecond: web, Principals: []string{"wasmgate.local/ns/shop/sa/web"}}}},
			{Name: "other", Namespace: "shop", Service: "payments", Total: &policy.Rate{RequestsPerSecond: 1}}}
	}
	if err := g.LoadRateLimits(limit(10, 2, 4)); err != nil {
		t.Fatal(err)
	}
	served := func(principal string, n int) int {
		ok := 0
		for range n {
			if d, name := g.AllowRate(principal); d.Allowed {
				ok++
			} else if name != "orders-limits" || d.RetryAfter <= 0 {
				t.Fatalf("a refusal of %q: %+v by %q", principal, d, name)
			}
		}
		return ok
	}
	if got := served(id("shop", "cart"), 5); got != 2 {
		t.Fatalf("cart: %d of 5 served, want its identity's 2", got)
	}
	if got := served(id("shop", "web"), 6); got != 4 {
		t.Fatalf("web: %d of 6 served, want its override's 4", got)
	}
	if got := served("", 3); got != 2 {
		t.Fatalf("plain text: %d of 3 served, want 2", got)
	}
	// 8 of the total's 10 are spent: two more identities get one each.
	total := 0
	for i := range 4 {
		total += served(id("shop", fmt.Sprintf("caller-%d", i)), 1)
	}
	if total != 2 {
		t.Fatalf("%d of 4 callers served, want the total's last 2", total)
	}
	if err := g.LoadRateLimits(limit(10, 2, 4)); err != nil {
		t.Fatal(err)
	}
	if got := served(id("shop", "cart"), 1); got != 0 {
		t.Fatal("the same policy loaded again gave fresh buckets")
	}
	if err := g.LoadRateLimits(limit(10, 3, 4)); err != nil {
		t.Fatal(err)
	}
	if got := served(id("shop", "cart"), 5); got != 3 {
		t.Fatalf("after a change: %d of 5 served, want 3", got)
	}
	if err := g.LoadRateLimits(nil); err != nil {
		t.Fatal(err)
	}
	if got := served(id("shop", "cart"), 50); got != 50 {
		t.Fatalf("without a policy: %d of 50 served", got)
	}
	bad := limit(0, 2, 4)
	if err := g.LoadRateLimits(bad); err == nil {
		t.Fatal("a rate of 0 was loaded")
	}
}
