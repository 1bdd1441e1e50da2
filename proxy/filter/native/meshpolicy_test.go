package native_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
)

const (
	ordersID = "spiffe://wasmgate.local/ns/shop/sa/orders"
	webID    = "spiffe://wasmgate.local/ns/shop/sa/web"
)

func guard(t testing.TB) *policy.Guard {
	g := policy.NewGuard("shop", "payments")
	err := g.Load(1, []policy.AuthorizationPolicy{{Name: "callers", Namespace: "shop", Service: "payments", Action: policy.Allow,
		Rules: []policy.Rule{{From: []policy.Source{{Principals: []string{ordersID}}}}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func exchange(peer string, spoof string) *filter.Exchange {
	ctx := &fasthttp.RequestCtx{}
	ctx.Request.Header.SetMethod(fasthttp.MethodPost)
	ctx.Request.SetRequestURI("/pay?amount=3")
	ctx.Request.Header.SetHost("payments")
	if spoof != "" {
		ctx.Request.Header.Set(native.PeerIdentityHeader, spoof)
	}
	conn := &filter.ConnInfo{Remote: netip.MustParseAddrPort("10.0.0.2:40000"), Local: netip.MustParseAddrPort("10.0.0.3:15006")}
	if peer != "" {
		conn.TLS = &filter.TLSInfo{PeerPresented: true, PeerVerified: true, PeerURISANs: []string{peer}}
	}
	x := filter.NewExchange()
	x.Ctx, x.Conn = ctx, conn
	return x
}

func TestMeshPolicy(t *testing.T) {
	f := native.NewMeshPolicy(guard(t), nil)
	for _, tc := range []struct {
		name, peer, spoof string
		allowed           bool
	}{
		{"the allowed peer", ordersID, "", true},
		{"another peer", webID, "", false},
		{"another peer claiming to be the allowed one", webID, ordersID, false},
		{"no certificate, a claim only", "", ordersID, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := exchange(tc.peer, tc.spoof)
			st := f.OnRequestHeaders(x, true)
			got := string(x.Ctx.Request.Header.Peek(native.PeerIdentityHeader))
			if tc.allowed {
				if st != filter.Continue || got != tc.peer {
					t.Fatalf("status %v, identity header %q", st, got)
				}
				return
			}
			if st != filter.Stop || x.Ctx.Response.StatusCode() != fasthttp.StatusForbidden ||
				!strings.HasPrefix(string(x.Ctx.Response.Body()), "RBAC: access denied") {
				t.Fatalf("status %v, response %d %q", st, x.Ctx.Response.StatusCode(), x.Ctx.Response.Body())
			}
			if got != "" {
				t.Fatalf("a denied request kept the identity header %q", got)
			}
		})
	}
}

func BenchmarkMeshPolicyAllow(b *testing.B) {
	f := native.NewMeshPolicy(guard(b), nil)
	x := exchange(ordersID, "")
	b.ReportAllocs()
	for b.Loop() {
		if f.OnRequestHeaders(x, true) != filter.Continue {
			b.Fatal("denied")
		}
	}
}

// decisions keeps the decision records a filter makes.
type decisions []filter.Decision

func (d *decisions) Decide(_ *filter.Exchange, rec *filter.Decision) { *d = append(*d, *rec) }

func TestMeshPolicyRecordsDecisions(t *testing.T) {
	f := native.NewMeshPolicy(guard(t), nil)
	for _, tc := range []struct {
		peer    string
		allowed bool
		policy  string
		rule    string
	}{
		{ordersID, true, "callers", "0"},
		{webID, false, "", ""},
	} {
		var got decisions
		x := exchange(tc.peer, "")
		x.Decisions = &got
		f.OnRequestHeaders(x, true)
		if len(got) != 1 {
			t.Fatalf("%s: %d decision records, want 1", tc.peer, len(got))
		}
		d := got[0]
		if d.Source != "mesh" || d.Allowed != tc.allowed || d.Policy != tc.policy || d.Rule != tc.rule ||
			d.Destination != "payments.shop" || d.Reason == "" {
			t.Errorf("%s: decision record %+v", tc.peer, d)
		}
	}
}
