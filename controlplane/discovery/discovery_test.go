package discovery_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// startHub runs a hub over cli until the test ends and waits for its first
// read of etcd.
func startHub(t *testing.T, cli *clientv3.Client, prefix string) *discovery.Hub {
	t.Helper()
	h := discovery.NewHub(cli, prefix, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-h.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the hub did not read etcd")
	}
	return h
}

// next returns the watch's next update, failing the test after a while.
func next(t *testing.T, w *discovery.Watch) discovery.Update {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return u
}

// quiet asserts that the watch has nothing new.
func quiet(t *testing.T, w *discovery.Watch, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if u, err := w.Next(ctx); err == nil {
		t.Fatalf("%s: got an update %s", what, describe(u))
	}
}

func describe(u discovery.Update) string {
	var parts []string
	for _, e := range u.Endpoints {
		var ids []string
		for _, it := range e.Items {
			ids = append(ids, it.ID)
		}
		parts = append(parts, e.Service+"=["+strings.Join(ids, ",")+"]")
		for _, r := range e.Routes {
			parts = append(parts, "route:"+r.Name)
		}
	}
	if u.Policies != nil {
		var names []string
		for _, p := range u.Policies.Authorization {
			names = append(names, p.Name)
		}
		for _, p := range u.Policies.Peer {
			names = append(names, "peer:"+p.Name)
		}
		for _, p := range u.Policies.Outbound {
			names = append(names, "outbound:"+p.Name+"="+string(p.Mode))
		}
		for _, p := range u.Policies.Wasm {
			names = append(names, "wasm:"+p.Name)
		}
		for _, p := range u.Policies.Entries {
			names = append(names, "entry:"+p.Name)
		}
		parts = append(parts, "policies=["+strings.Join(names, ",")+"]")
	}
	return strings.Join(parts, " ")
}

func register(t *testing.T, cli *clientv3.Client, prefix, service, addr string) int64 {
	t.Helper()
	if _, err := registry.RegisterEndpoint(context.Background(), cli, prefix, registry.Endpoint{Cluster: service, Address: addr}, time.Minute); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(context.Background(), resource.NewKeys(prefix).Endpoint(service, addr))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Kvs[0].ModRevision
}

func putPolicy(t *testing.T, cli *clientv3.Client, prefix string, v any) {
	t.Helper()
	keys := resource.NewKeys(prefix)
	ref := resource.Ref{Name: resource.NameOf(v)}
	switch v.(type) {
	case *policy.AuthorizationPolicy:
		ref.Kind = resource.AuthorizationPolicies
	case *policy.PeerAuthentication:
		ref.Kind = resource.PeerAuthentications
	case *policy.OutboundTrafficPolicy:
		ref.Kind = resource.OutboundTrafficPolicies
	case *policy.WasmPlugin:
		ref.Kind = resource.WasmPlugins
	case *policy.ServiceRoute:
		ref.Kind = resource.ServiceRoutes
	case *policy.ServiceEntry:
		ref.Kind = resource.ServiceEntries
	}
	b, err := resource.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), keys.Resource(ref), string(b)); err != nil {
		t.Fatal(err)
	}
}

// TestWatchersReceiveOnlyWhatTheyNeed: a sidecar gets the endpoints of the
// services it calls and the policies of its own service, live, and nothing
// about the rest of the mesh.
func TestWatchersReceiveOnlyWhatTheyNeed(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	register(t, cli, prefix, "orders.shop", "10.0.0.1:15006")
	h := startHub(t, cli, prefix)

	web := h.Watch(discovery.Interest{Services: []string{"orders.shop"}, Namespace: "shop", Service: "web"})
	defer web.Close()
	pay := h.Watch(discovery.Interest{Services: []string{"ledger.payments"}, Namespace: "payments", Service: "payments"})
	defer pay.Close()

	if got := describe(next(t, web)); got != "orders.shop=[10.0.0.1:15006] policies=[]" {
		t.Fatalf("web's first update: %s", got)
	}
	if got := describe(next(t, pay)); got != "ledger.payments=[] policies=[]" {
		t.Fatalf("payments' first update: %s", got)
	}

	// A new instance of orders reaches web only.
	rev := register(t, cli, prefix, "orders.shop", "10.0.0.2:15006")
	u := next(t, web)
	if got := describe(u); got != "orders.shop=[10.0.0.1:15006,10.0.0.2:15006]" || u.Endpoints[0].Revision != rev {
		t.Fatalf("after a registration: %s at revision %d, want revision %d", got, u.Endpoints[0].Revision, rev)
	}
	quiet(t, pay, "payments after a change to orders")

	// A renewal that rewrites the same value is not a change.
	register(t, cli, prefix, "orders.shop", "10.0.0.2:15006")
	quiet(t, web, "web after orders renewed a registration")

	// A service nobody calls reaches nobody.
	register(t, cli, prefix, "search.shop", "10.0.0.9:15006")
	quiet(t, web, "web after a change to search")

	// Policies: those of payments reach payments only; a mesh-wide one
	// reaches both; one for another service of shop does not reach web.
	putPolicy(t, cli, prefix, &policy.AuthorizationPolicy{Name: "payments-deny-all", Namespace: "payments"})
	if got := describe(next(t, pay)); got != "policies=[payments-deny-all]" {
		t.Fatalf("payments after its policy: %s", got)
	}
	quiet(t, web, "web after a policy of payments")
	putPolicy(t, cli, prefix, &policy.AuthorizationPolicy{Name: "orders-only", Namespace: "shop", Service: "orders", Rules: []policy.Rule{{}}})
	quiet(t, web, "web after a policy of orders")
	putPolicy(t, cli, prefix, &policy.PeerAuthentication{Name: "mesh", Namespace: policy.RootNamespace, Mode: policy.Strict})
	if got := describe(next(t, web)); got != "policies=[peer:mesh]" {
		t.Fatalf("web after a mesh-wide policy: %s", got)
	}
	if got := describe(next(t, pay)); got != "policies=[payments-deny-all,peer:mesh]" {
		t.Fatalf("payments after a mesh-wide policy: %s", got)
	}
	// An outbound traffic policy of shop reaches web, not payments.
	putPolicy(t, cli, prefix, &policy.OutboundTrafficPolicy{Name: "shop-egress", Namespace: "shop", Mode: policy.AllowAny})
	if got := describe(next(t, web)); got != "policies=[peer:mesh,outbound:shop-egress=allow_any]" {
		t.Fatalf("web after its namespace's outbound traffic policy: %s", got)
	}
	quiet(t, pay, "payments after an outbound traffic policy of shop")
	// A Wasm plugin of web reaches web only.
	putPolicy(t, cli, prefix, &policy.WasmPlugin{Name: "web-waf", Namespace: "shop", Service: "web", Mode: policy.WasmInbound, SHA256: strings.Repeat("a", 64)})
	if got := describe(next(t, web)); got != "policies=[peer:mesh,outbound:shop-egress=allow_any,wasm:web-waf]" {
		t.Fatalf("web after its Wasm plugin: %s", got)
	}
	quiet(t, pay, "payments after a Wasm plugin of web")
	// A service entry of shop reaches web only.
	putPolicy(t, cli, prefix, &policy.ServiceEntry{Name: "shop-apis", Namespace: "shop", Hosts: []string{"api.example.com"}})
	if got := describe(next(t, web)); got != "policies=[peer:mesh,outbound:shop-egress=allow_any,wasm:web-waf,entry:shop-apis]" {
		t.Fatalf("web after its namespace's service entry: %s", got)
	}
	quiet(t, pay, "payments after a service entry of shop")

	// A service route of orders travels with orders' endpoints, to web.
	putPolicy(t, cli, prefix, &policy.ServiceRoute{Name: "orders-canary", Namespace: "shop", Service: "orders",
		Rules: []policy.RouteRule{{Backends: []policy.RouteBackend{{Version: "v2", Weight: 1}}}}})
	if got := describe(next(t, web)); got != "orders.shop=[10.0.0.1:15006,10.0.0.2:15006] route:orders-canary" {
		t.Fatalf("web after a route of orders: %s", got)
	}
	quiet(t, pay, "payments after a route of orders")

	// Status: both synced; a change web has not taken yet makes it stale.
	status := func() map[string][]string {
		_, ws := h.Status()
		out := map[string][]string{}
		for _, w := range ws {
			out[w.Service] = append(w.Stale, fmt.Sprint(w.Synced))
		}
		return out
	}
	if got := fmt.Sprint(status()); got != "map[payments:[true] web:[true]]" {
		t.Fatalf("status when both took everything: %s", got)
	}
	register(t, cli, prefix, "orders.shop", "10.0.0.4:15006")
	deadline := time.Now().Add(5 * time.Second)
	for fmt.Sprint(status()) != "map[payments:[true] web:[orders.shop false]]" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := fmt.Sprint(status()); got != "map[payments:[true] web:[orders.shop false]]" {
		t.Fatalf("status with a registration web has not taken: %s", got)
	}
	next(t, web)
	if got := fmt.Sprint(status()); got != "map[payments:[true] web:[true]]" {
		t.Fatalf("status once web took it: %s", got)
	}
	// A report: of another identity's watch, refused; a rejection makes
	// the watch unsynced, an application synced again.
	if err := h.Report(web.ID(), "spiffe://wasmgate.local/ns/shop/sa/pay", discovery.Report{Version: "mesh-3"}); err != discovery.ErrUnknownWatch {
		t.Fatalf("a report for another identity's watch: %v", err)
	}
	if err := h.Report(web.ID(), "", discovery.Report{Version: "mesh-3", Error: "rejected: a plugin"}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(status()); got != "map[payments:[true] web:[false]]" {
		t.Fatalf("status after a rejection: %s", got)
	}
	if err := h.Report(web.ID(), "", discovery.Report{Version: "mesh-4"}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(status()); got != "map[payments:[true] web:[true]]" {
		t.Fatalf("status after an application: %s", got)
	}
	if _, err := registry.DeregisterEndpoint(context.Background(), cli, prefix, "orders.shop", "10.0.0.4:15006"); err != nil {
		t.Fatal(err)
	}
	next(t, web)
	if _, err := cli.Delete(context.Background(), resource.NewKeys(prefix).Resource(resource.Ref{Kind: resource.ServiceRoutes, Name: "orders-canary"})); err != nil {
		t.Fatal(err)
	}
	if got := describe(next(t, web)); got != "orders.shop=[10.0.0.1:15006,10.0.0.2:15006]" {
		t.Fatalf("web after the route of orders went: %s", got)
	}

	// Deregistration, and a lease that expires, remove endpoints.
	if _, err := registry.DeregisterEndpoint(context.Background(), cli, prefix, "orders.shop", "10.0.0.1:15006"); err != nil {
		t.Fatal(err)
	}
	if got := describe(next(t, web)); got != "orders.shop=[10.0.0.2:15006]" {
		t.Fatalf("after a deregistration: %s", got)
	}
	lease, err := cli.Grant(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), resource.NewKeys(prefix).Endpoint("orders.shop", "short"), `{"address":"10.0.0.3:15006"}`, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if got := describe(next(t, web)); got != "orders.shop=[10.0.0.2:15006,short]" {
		t.Fatalf("after a leased registration: %s", got)
	}
	if got := describe(next(t, web)); got != "orders.shop=[10.0.0.2:15006]" {
		t.Fatalf("after the lease expired: %s", got)
	}

	// A closed watch ends its Next.
	pay.Close()
	if _, err := pay.Next(context.Background()); err != discovery.ErrClosed {
		t.Fatalf("Next after Close = %v", err)
	}
}

// TestCompactionDoesNotResendEverything: after the hub loses its watch
// and etcd compacts past it, the hub reads etcd again, and watchers hear
// only of the services that changed meanwhile.
func TestCompactionDoesNotResendEverything(t *testing.T) {
	direct := etcdtest.Client(t)
	gate := etcdtest.NewGate(t, strings.TrimPrefix(etcdtest.Endpoints(t)[0], "http://"))
	cli := etcdtest.ClientOf(t, []string{gate.Endpoint()})
	prefix := etcdtest.Prefix(t)
	const services = 20
	for i := range services {
		register(t, direct, prefix, fmt.Sprintf("svc-%d", i), "10.1.0.1:15006")
	}
	h := startHub(t, cli, prefix)
	var ws []*discovery.Watch
	for i := range services {
		w := h.Watch(discovery.Interest{Services: []string{fmt.Sprintf("svc-%d", i)}})
		defer w.Close()
		next(t, w)
		ws = append(ws, w)
	}
	lists := h.Stats().Lists

	gate.Cut()
	register(t, direct, prefix, "svc-3", "10.1.0.2:15006")
	register(t, direct, prefix, "svc-7", "10.1.0.2:15006")
	resp, err := direct.Get(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	gate.Open()

	for _, i := range []int{3, 7} {
		if got := describe(next(t, ws[i])); got != fmt.Sprintf("svc-%d=[10.1.0.1:15006,10.1.0.2:15006]", i) {
			t.Fatalf("svc-%d after the compaction: %s", i, got)
		}
	}
	for i, w := range ws {
		if i != 3 && i != 7 {
			quiet(t, w, fmt.Sprintf("svc-%d, which did not change", i))
		}
	}
	if s := h.Stats(); s.Lists <= lists {
		t.Fatalf("the hub did not read etcd again (lists %d, before %d)", s.Lists, lists)
	}
}

func TestInterestIsNormalized(t *testing.T) {
	h := discovery.NewHub(etcdtest.Client(t), etcdtest.Prefix(t), nil)
	w := h.Watch(discovery.Interest{Services: []string{"b", "a", "b"}})
	defer w.Close()
	if got := w.Interest().Services; !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Interest().Services = %v", got)
	}
	if s := h.Stats(); s.Watchers != 1 || s.Services != 2 {
		t.Fatalf("Stats = %+v", s)
	}
}

// BenchmarkFanOut is the hub's cost of one endpoint change to a service
// that 100 sidecars call, delivered to all of them: the event applied,
// a new snapshot, and each watcher's Next.
func BenchmarkFanOut(b *testing.B) {
	cli := etcdtest.Client(b)
	prefix := etcdtest.Prefix(b)
	keys := resource.NewKeys(prefix)
	for i := range 10 {
		if _, err := cli.Put(context.Background(), keys.Endpoint("orders.shop", fmt.Sprintf("i%d", i)), fmt.Sprintf(`{"address":"10.0.0.%d:15006"}`, i+1)); err != nil {
			b.Fatal(err)
		}
	}
	h := discovery.NewHub(cli, prefix, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.Run(ctx)
	<-h.Ready()
	ws := make([]*discovery.Watch, 100)
	for i := range ws {
		ws[i] = h.Watch(discovery.Interest{Services: []string{"orders.shop"}})
		defer ws[i].Close()
		if _, err := ws[i].Next(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := cli.Put(ctx, keys.Endpoint("orders.shop", "churn"), fmt.Sprintf(`{"address":"10.1.%d.%d:15006"}`, i/250%250, i%250)); err != nil {
			b.Fatal(err)
		}
		for _, w := range ws {
			if _, err := w.Next(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestWatchEveryService: a watch of AnyService gets every service there
// is, each service that comes later, and an empty snapshot of one that
// is gone; the names listed beside it are moot.
func TestWatchEveryService(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	register(t, cli, prefix, "orders.shop", "10.0.0.1:15006")
	h := startHub(t, cli, prefix)

	all := h.Watch(discovery.Interest{Services: []string{"orders.shop", discovery.AnyService}, Namespace: "shop", Service: "web"})
	defer all.Close()
	if got := all.Interest().Services; !slices.Equal(got, []string{discovery.AnyService}) {
		t.Fatalf("Interest().Services = %v", got)
	}
	one := h.Watch(discovery.Interest{Services: []string{"orders.shop"}})
	defer one.Close()
	if got := describe(next(t, all)); got != "orders.shop=[10.0.0.1:15006] policies=[]" {
		t.Fatalf("the first update: %s", got)
	}
	next(t, one)

	register(t, cli, prefix, "search.shop", "10.0.0.9:15006")
	// Its virtual address may come in an update of its own.
	for {
		u := next(t, all)
		if got := describe(u); got != "search.shop=[10.0.0.9:15006]" {
			t.Fatalf("a new service: %s", got)
		}
		if u.Endpoints[0].VIP != "" {
			break
		}
	}
	quiet(t, one, "a watcher of orders after search came")

	register(t, cli, prefix, "orders.shop", "10.0.0.2:15006")
	if got := describe(next(t, all)); got != "orders.shop=[10.0.0.1:15006,10.0.0.2:15006]" {
		t.Fatalf("a new endpoint: %s", got)
	}
	next(t, one)

	if _, err := registry.DeregisterEndpoint(context.Background(), cli, prefix, "search.shop", "10.0.0.9:15006"); err != nil {
		t.Fatal(err)
	}
	if got := describe(next(t, all)); got != "search.shop=[]" {
		t.Fatalf("a service gone: %s", got)
	}

	all.Close()
	if s := h.Stats(); s.Watchers != 1 {
		t.Fatalf("after Close: %+v", s)
	}
	register(t, cli, prefix, "search.shop", "10.0.0.9:15006")
	quiet(t, one, "a watcher of orders after search came back")
}
