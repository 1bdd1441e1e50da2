package policy_test

import (
	"testing"

	"github.com/wasmgate/wasmgate/mesh/policy"
)

// TestRateLimits: each caller identity has its bucket, an override's
// callers theirs at their own rate, and all together the total's, which a
// caller over its own rate spends nothing of; a refusal says which policy
// and when to come back; a reload of the same policy keeps its buckets, a
// changed one starts afresh. The rates are low enough (a token each half
// second or slower) that no bucket refills during a check.
func TestRateLimits(t *testing.T) {
	type limit struct{ total, identity, web int }
	load := func(g *policy.Guard, l limit) error {
		p := policy.RateLimitPolicy{Name: "orders-limits", Namespace: "shop", Service: "orders"}
		if l.total > 0 {
			p.Total = &policy.Rate{RequestsPerSecond: l.total}
		}
		if l.identity > 0 {
			p.Identity = &policy.Rate{RequestsPerSecond: l.identity}
		}
		if l.web > 0 {
			p.Overrides = []policy.RateOverride{{RequestsPerSecond: l.web, Principals: []string{"wasmgate.local/ns/shop/sa/web"}}}
		}
		other := policy.RateLimitPolicy{Name: "other", Namespace: "shop", Service: "payments", Total: &policy.Rate{RequestsPerSecond: 1}}
		return g.LoadRateLimits([]policy.RateLimitPolicy{p, other})
	}
	served := func(g *policy.Guard, principal string, n int) int {
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
	cart, web := id("shop", "cart"), id("shop", "web")

	// Per identity, and an override.
	g := policy.NewGuard("shop", "orders")
	if err := load(g, limit{identity: 2, web: 1}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		who       string
		n, served int
	}{{cart, 5, 2}, {web, 3, 1}, {"", 3, 2}} {
		if got := served(g, c.who, c.n); got != c.served {
			t.Fatalf("%q: %d of %d served, want %d", c.who, got, c.n, c.served)
		}
	}
	if err := load(g, limit{identity: 2, web: 1}); err != nil {
		t.Fatal(err)
	}
	if got := served(g, cart, 1); got != 0 {
		t.Fatal("the same policy loaded again gave fresh buckets")
	}
	if err := load(g, limit{identity: 3, web: 1}); err != nil {
		t.Fatal(err)
	}
	if got := served(g, cart, 5); got != 3 {
		t.Fatalf("after a change: %d of 5 served, want 3", got)
	}
	if err := g.LoadRateLimits(nil); err != nil {
		t.Fatal(err)
	}
	if got := served(g, cart, 50); got != 50 {
		t.Fatalf("without a policy: %d of 50 served", got)
	}
	if err := load(g, limit{identity: 0, web: 0}); err == nil {
		t.Fatal("a policy that limits nothing was loaded")
	}

	// The total, whoever calls; a caller refused by its own bucket
	// spends none of it.
	g = policy.NewGuard("shop", "orders")
	if err := load(g, limit{total: 2, identity: 1}); err != nil {
		t.Fatal(err)
	}
	if got := served(g, cart, 3); got != 1 {
		t.Fatalf("cart: %d of 3 served, want its identity's 1", got)
	}
	if got := served(g, web, 1) + served(g, id("shop", "other"), 1); got != 1 {
		t.Fatalf("%d of 2 served after cart, want the total's last 1", got)
	}
}
