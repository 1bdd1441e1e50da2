package watch_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/internal/embedded"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
	"github.com/wasmgate/wasmgate/controlplane/watch"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

func base() *config.Config {
	return &config.Config{
		Listeners: []config.Listener{{Name: "main", Address: "127.0.0.1:8080"}},
		VirtualHosts: []config.VirtualHost{{Name: "web", Domains: []string{"*"}, Routes: []config.Route{
			{Match: config.RouteMatch{Prefix: "/api"}, Cluster: "api"},
		}}},
		Clusters: []config.Cluster{{Name: "api", Endpoints: []config.Endpoint{{Address: "127.0.0.1:9001"}}}},
	}
}

// applied records the watcher's Apply calls.
type applied struct {
	mu    sync.Mutex
	calls []call
	ch    chan call
}

type call struct {
	cfg *config.Config
	rev int64
	at  time.Time
}

func newApplied() *applied { return &applied{ch: make(chan call, 1024)} }

func (a *applied) apply(cfg *config.Config, rev int64) error {
	c := call{cfg, rev, time.Now()}
	a.mu.Lock()
	a.calls = append(a.calls, c)
	a.mu.Unlock()
	a.ch <- c
	return nil
}

func (a *applied) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.calls)
}

// until waits for an Apply whose configuration satisfies ok.
func (a *applied) until(t *testing.T, what string, ok func(call) bool) call {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case c := <-a.ch:
			if ok(c) {
				return c
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func atRev(rev int64) func(call) bool { return func(c call) bool { return c.rev >= rev } }

func clusterAddr(cfg *config.Config, name string) string {
	for _, c := range cfg.Clusters {
		if c.Name == name && len(c.Endpoints) > 0 {
			return c.Endpoints[0].Address
		}
	}
	return ""
}

func startWatcher(t *testing.T, o watch.Options) *watch.Watcher {
	t.Helper()
	w, err := watch.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func setAddr(t *testing.T, st *store.Store, addr string) *store.Result {
	t.Helper()
	c := base().Clusters[0]
	c.Endpoints[0].Address = addr
	res, err := st.Apply(context.Background(), store.Change{Put: resource.Set{{Kind: resource.Clusters, Name: "api"}: &c}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestFollowsChanges(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	st := store.New(cli, prefix)
	first, err := st.Apply(context.Background(), store.Change{Put: resource.Split(base())})
	if err != nil {
		t.Fatal(err)
	}
	a := newApplied()
	boot := &config.Config{Admin: config.Admin{Address: "off"}, Node: config.Node{ID: "p1"}}
	w := startWatcher(t, watch.Options{Client: cli, Prefix: prefix, Bootstrap: boot, Apply: a.apply})
	c := a.until(t, "the first configuration", atRev(first.Revision))
	if c.cfg.Admin.Address != "off" || c.cfg.Node.ID != "p1" || clusterAddr(c.cfg, "api") != "127.0.0.1:9001" {
		t.Fatalf("first configuration = %+v", c.cfg)
	}
	if c.cfg.VirtualHosts[0].Routes[0].Name != "web-0" {
		t.Fatal("the configuration handed to Apply is not normalized")
	}
	res := setAddr(t, st, "127.0.0.1:9002")
	c = a.until(t, "the change", atRev(res.Revision))
	if clusterAddr(c.cfg, "api") != "127.0.0.1:9002" {
		t.Fatalf("after the change: %s", clusterAddr(c.cfg, "api"))
	}
	// The status is recorded just after Apply returns.
	deadline := time.Now().Add(5 * time.Second)
	for s := w.Status(); s.Revision < res.Revision || s.FromCache || !s.Watching || s.LastError != ""; s = w.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("status = %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBurstIsOneApply(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	st := store.New(cli, prefix)
	cfg := base()
	cfg.Clusters[0].Discovery = config.DiscoveryRegistry
	cfg.Clusters[0].Endpoints = nil
	if _, err := st.Apply(context.Background(), store.Change{Put: resource.Split(cfg)}); err != nil {
		t.Fatal(err)
	}
	a := newApplied()
	// The burst is 50 puts one after the other: it is one burst to the
	// watcher if no gap between two of them outlasts the quiet time. A
	// put's round trip to etcd, under the race detector on a busy 2-core
	// machine, can take as long as 20 ms; the quiet time is well above
	// that, and MaxDelay above the whole burst, so that what is checked is
	// the gathering, not how fast the puts went.
	startWatcher(t, watch.Options{Client: cli, Prefix: prefix, Apply: a.apply, Debounce: 250 * time.Millisecond, MaxDelay: 5 * time.Second})
	a.until(t, "the first configuration", func(call) bool { return true })
	before := a.count()
	keys := resource.NewKeys(prefix)
	const n = 50
	var last int64
	for i := range n {
		resp, err := cli.Put(context.Background(), keys.Endpoint("api", fmt.Sprint(i)), fmt.Sprintf(`{"address":"127.0.0.1:%d"}`, 20000+i))
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	c := a.until(t, "all endpoints", atRev(last))
	if got := len(c.cfg.Clusters[0].Endpoints); got != n {
		t.Fatalf("%d endpoints, want %d", got, n)
	}
	if calls := a.count() - before; calls > 3 {
		t.Fatalf("%d puts gave %d Apply calls, want a burst to gather into one or two", n, calls)
	}
}

func TestRegistryEndpointsExpire(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	st := store.New(cli, prefix)
	cfg := base()
	cfg.Clusters[0].Discovery = config.DiscoveryRegistry
	cfg.Clusters[0].Endpoints = nil
	if _, err := st.Apply(context.Background(), store.Change{Put: resource.Split(cfg)}); err != nil {
		t.Fatal(err)
	}
	a := newApplied()
	startWatcher(t, watch.Options{Client: cli, Prefix: prefix, Apply: a.apply})
	if _, err := registry.RegisterEndpoint(context.Background(), cli, prefix, registry.Endpoint{Cluster: "api", ID: "a", Address: "127.0.0.1:7001", Weight: 3}, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	c := a.until(t, "the registered endpoint", func(c call) bool { return len(c.cfg.Clusters[0].Endpoints) == 1 })
	if ep := c.cfg.Clusters[0].Endpoints[0]; ep.Address != "127.0.0.1:7001" || ep.Weight != 3 {
		t.Fatalf("endpoint = %+v", ep)
	}
	start := time.Now()
	a.until(t, "the endpoint to expire", func(c call) bool { return len(c.cfg.Clusters[0].Endpoints) == 0 })
	t.Logf("endpoint gone %v after its last renewal (ttl 2s)", time.Since(start).Round(time.Millisecond))
}

func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	return zap.New(core), logs
}

func TestHostileValuesAreSkipped(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	keys := resource.NewKeys(prefix)
	st := store.New(cli, prefix)
	first, err := st.Apply(context.Background(), store.Change{Put: resource.Split(base())})
	if err != nil {
		t.Fatal(err)
	}
	a := newApplied()
	lg, logs := observed()
	w := startWatcher(t, watch.Options{Client: cli, Prefix: prefix, Apply: a.apply, Logger: lg})
	a.until(t, "the first configuration", atRev(first.Revision))
	ctx := context.Background()

	for _, tc := range []struct{ name, key, value, logged string }{
		{"not JSON", keys.Resource(resource.Ref{Kind: resource.Clusters, Name: "api"}), "\x00\xff garbage", "ignoring an invalid value"},
		{"unknown field", keys.Resource(resource.Ref{Kind: resource.Clusters, Name: "api"}), `{"name":"api","endpoints":[{"address":"1.2.3.4:5"}],"exec":"rm -rf /"}`, "ignoring an invalid value"},
		{"name mismatch", keys.Resource(resource.Ref{Kind: resource.Clusters, Name: "api"}), `{"name":"evil","endpoints":[{"address":"1.2.3.4:5"}]}`, "ignoring an invalid value"},
		{"invalid config", keys.Resource(resource.Ref{Kind: resource.VirtualHosts, Name: "web"}), `{"name":"web","domains":["*"],"routes":[{"match":{"path_regex":"(("},"cluster":"api"}]}`, "rejecting the configuration"},
		{"dangling reference", keys.Resource(resource.Ref{Kind: resource.VirtualHosts, Name: "web"}), `{"name":"web","domains":["*"],"routes":[{"cluster":"nowhere"}]}`, "rejecting the configuration"},
		{"bad endpoint", keys.Endpoint("api", "x"), `{"address":"not an address"}`, "ignoring an invalid value"},
		// Over the cap, under etcd's own request limit (1.5 MiB).
		{"value over the size cap", keys.Resource(resource.Ref{Kind: resource.Clusters, Name: "api"}),
			`{"name":"api","endpoints":[{"address":"127.0.0.1:9001"}],"lb_policy":"` + strings.Repeat("x", store.MaxResourceBytes) + `"}`, "ignoring an invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := a.count()
			if _, err := cli.Put(ctx, tc.key, tc.value); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for logs.FilterMessageSnippet(tc.logged).Len() == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("no %q logged", tc.logged)
				}
				time.Sleep(5 * time.Millisecond)
			}
			for _, e := range logs.FilterMessageSnippet(tc.logged).All() {
				if reason := fmt.Sprint(e.ContextMap()["error"]); strings.Contains(tc.name, "size cap") && !strings.Contains(reason, "bytes a resource may take") {
					t.Errorf("logged reason %q does not say the value is too large", reason)
				}
			}
			time.Sleep(50 * time.Millisecond)
			if a.count() != n {
				t.Fatal("Apply was called with a hostile value in etcd")
			}
			if w.Status().LastError == "" {
				t.Fatal("the status does not report the rejection")
			}
			logs.TakeAll()
		})
	}
	// A valid change goes through; values still invalid keep their last
	// good version.
	if _, err := cli.Put(ctx, keys.Resource(resource.Ref{Kind: resource.VirtualHosts, Name: "web"}), `{"name":"web","domains":["*"],"routes":[{"cluster":"api","timeout":"3s"}]}`); err != nil {
		t.Fatal(err)
	}
	c := a.until(t, "the valid change", func(c call) bool { return c.cfg.VirtualHosts[0].Routes[0].Timeout.D() == 3*time.Second })
	if clusterAddr(c.cfg, "api") != "127.0.0.1:9001" {
		t.Fatalf("cluster api = %s, want its last good value", clusterAddr(c.cfg, "api"))
	}
}

func TestCompactionResync(t *testing.T) {
	ep := etcdtest.Endpoints(t)[0]
	gate := etcdtest.NewGate(t, strings.TrimPrefix(ep, "http://"))
	watcherCli := etcdtest.ClientOf(t, []string{gate.Endpoint()})
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	st := store.New(cli, prefix)
	first, err := st.Apply(context.Background(), store.Change{Put: resource.Split(base())})
	if err != nil {
		t.Fatal(err)
	}
	a := newApplied()
	lg, logs := observed()
	startWatcher(t, watch.Options{Client: watcherCli, Prefix: prefix, Apply: a.apply, Logger: lg})
	a.until(t, "the first configuration", atRev(first.Revision))

	// The watcher loses its connection; meanwhile the configuration
	// changes and the history it would resume from is compacted away.
	gate.Cut()
	var last *store.Result
	for i := range 5 {
		last = setAddr(t, st, fmt.Sprintf("127.0.0.1:%d", 9100+i))
	}
	if _, err := cli.Compact(context.Background(), last.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	gate.Open()
	c := a.until(t, "the resync", atRev(last.Revision))
	if got := clusterAddr(c.cfg, "api"); got != "127.0.0.1:9104" {
		t.Fatalf("after resync api = %s", got)
	}
	if logs.FilterMessageSnippet("listing the configuration again").Len() == 0 {
		t.Fatal("the watcher did not list again")
	}
	// And it watches again.
	res := setAddr(t, st, "127.0.0.1:9200")
	a.until(t, "a change after the resync", atRev(res.Revision))
}

func TestForcedCompactionOfALiveWatch(t *testing.T) {
	// A watcher whose connection stays up but whose watch is canceled by
	// compaction: the server ends it with ErrCompacted only when it lags;
	// here the watch is up to date, so compaction must change nothing.
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	st := store.New(cli, prefix)
	first, _ := st.Apply(context.Background(), store.Change{Put: resource.Split(base())})
	a := newApplied()
	startWatcher(t, watch.Options{Client: cli, Prefix: prefix, Apply: a.apply})
	a.until(t, "the first configuration", atRev(first.Revision))
	res := setAddr(t, st, "127.0.0.1:9300")
	if _, err := cli.Compact(context.Background(), res.Revision); err != nil {
		t.Fatal(err)
	}
	res = setAddr(t, st, "127.0.0.1:9301")
	c := a.until(t, "a change after compaction", atRev(res.Revision))
	if clusterAddr(c.cfg, "api") != "127.0.0.1:9301" {
		t.Fatal("wrong configuration after compaction")
	}
}

func TestEtcdStopAndStart(t *testing.T) {
	dir := t.TempDir()
	ecfg := embedded.Config{Dir: filepath.Join(dir, "etcd"), NoFsync: true}
	e, err := embedded.Start(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close() }()
	// Restart on the same ports.
	ecfg.ClientAddr = strings.TrimPrefix(e.Endpoints()[0], "http://")
	ecfg.PeerAddr = e.PeerAddr()
	eps := e.Endpoints()
	cli := etcdtest.ClientOf(t, eps)
	prefix := "/wasmgate"
	st := store.New(cli, prefix)
	first, err := st.Apply(context.Background(), store.Change{Put: resource.Split(base())})
	if err != nil {
		t.Fatal(err)
	}
	cacheA := filepath.Join(dir, "a", "config.json")
	a := newApplied()
	wa := startWatcher(t, watch.Options{Client: etcdtest.ClientOf(t, eps), Prefix: prefix, Apply: a.apply, CacheFile: cacheA})
	a.until(t, "the first configuration", atRev(first.Revision))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(cacheA); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no cache written: %v", err)
		}
	}

	e.Close()
	time.Sleep(300 * time.Millisecond)
	if s := wa.Status(); s.Revision != first.Revision || !s.Ready() {
		t.Fatalf("after etcd stopped, status = %+v", s)
	}
	// A proxy that starts now serves from the cache.
	cacheB := filepath.Join(dir, "b", "config.json")
	os.MkdirAll(filepath.Dir(cacheB), 0o755)
	data, _ := os.ReadFile(cacheA)
	os.WriteFile(cacheB, data, 0o644)
	b := newApplied()
	wb := startWatcher(t, watch.Options{Client: etcdtest.ClientOf(t, eps), Prefix: prefix, Apply: b.apply, CacheFile: cacheB,
		Bootstrap: &config.Config{Node: config.Node{ID: "b"}}, RequestTimeout: 500 * time.Millisecond})
	cb := b.until(t, "the cached configuration", atRev(first.Revision))
	if cb.cfg.Node.ID != "b" || clusterAddr(cb.cfg, "api") != "127.0.0.1:9001" {
		t.Fatalf("from cache: node %q, api %s", cb.cfg.Node.ID, clusterAddr(cb.cfg, "api"))
	}
	// The status is recorded just after the configuration is applied.
	for deadline := time.Now().Add(5 * time.Second); !wb.Status().FromCache; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("from cache: status %+v", wb.Status())
		}
	}
	if a.count() != 1 {
		t.Fatalf("the running watcher applied %d times while etcd was down", a.count())
	}

	e, err = embedded.Start(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	res := setAddr(t, st, "127.0.0.1:9500")
	a.until(t, "watcher a to catch up", atRev(res.Revision))
	b.until(t, "watcher b to catch up", atRev(res.Revision))
	deadline := time.Now().Add(5 * time.Second)
	for wb.Status().FromCache {
		if time.Now().After(deadline) {
			t.Fatal("watcher b still reports serving from cache")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBlob(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	st := store.New(cli, prefix)
	data := []byte(strings.Repeat("wasm", 300000))
	meta, err := st.PutBlob(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "c.json")
	w, err := watch.New(watch.Options{Client: cli, Prefix: prefix, Apply: func(*config.Config, int64) error { return nil }, CacheFile: cache})
	if err != nil {
		t.Fatal(err)
	}
	got, err := w.Blob(context.Background(), meta.SHA256)
	if err != nil || string(got) != string(data) {
		t.Fatalf("blob: %v", err)
	}
	// Cached beside the configuration: served with etcd gone.
	cli2 := etcdtest.ClientOf(t, []string{"http://127.0.0.1:1"})
	w2, _ := watch.New(watch.Options{Client: cli2, Prefix: prefix, Apply: func(*config.Config, int64) error { return nil }, CacheFile: cache})
	if got, err := w2.Blob(context.Background(), meta.SHA256); err != nil || len(got) != len(data) {
		t.Fatalf("cached blob: %v", err)
	}
	if _, err := w2.Blob(context.Background(), "../../etc/passwd"); err == nil {
		t.Fatal("a path was taken for a digest")
	}
}

// counter counts the etcd requests and bytes a client makes.
type counter struct {
	ranges, txns, watchMsgs, watchBytes, readBytes atomic.Int64
}

func (c *counter) options(cfg *clientv3.Config) {
	cfg.DialOptions = append(cfg.DialOptions,
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, opts...)
			switch method {
			case "/etcdserverpb.KV/Range":
				c.ranges.Add(1)
			case "/etcdserverpb.KV/Txn":
				c.txns.Add(1)
			}
			if m, ok := reply.(proto.Message); ok {
				c.readBytes.Add(int64(proto.Size(m)))
			}
			return err
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil || method != "/etcdserverpb.Watch/Watch" {
				return s, err
			}
			return &countingStream{ClientStream: s, c: c}, nil
		}))
}

type countingStream struct {
	grpc.ClientStream
	c *counter
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		if pm, ok := m.(proto.Message); ok {
			s.c.watchMsgs.Add(1)
			s.c.watchBytes.Add(int64(proto.Size(pm)))
		}
	}
	return err
}

// TestEtcdLossIsSaidOnce cuts a proxy off etcd: the watcher says so at
// once, and the registration once when its lease runs out; the retries in
// between are quiet; each says once that etcd is back.
func TestEtcdLossIsSaidOnce(t *testing.T) {
	ep := etcdtest.Endpoints(t)[0]
	gate := etcdtest.NewGate(t, strings.TrimPrefix(ep, "http://"))
	watcherCli := etcdtest.ClientOf(t, []string{gate.Endpoint()})
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	st := store.New(cli, prefix)
	first, err := st.Apply(context.Background(), store.Change{Put: resource.Split(base())})
	if err != nil {
		t.Fatal(err)
	}
	a := newApplied()
	core, logs := observer.New(zap.DebugLevel)
	t.Cleanup(func() {
		if t.Failed() {
			// The whole story of the outage, for the step that was late.
			for _, e := range logs.All() {
				t.Logf("%s %s %s %v", e.Time.Format("15:04:05.000"), e.Level, e.Message, e.ContextMap())
			}
		}
	})
	startWatcher(t, watch.Options{Client: watcherCli, Prefix: prefix, Apply: a.apply, Logger: zap.New(core),
		Bootstrap: &config.Config{Node: config.Node{ID: "cut-off"}},
		Register:  &watch.Registration{Address: "127.0.0.1:9901", TTL: 2 * time.Second}})
	a.until(t, "the first configuration", atRev(first.Revision))
	waitLog := func(what string, n int, within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); logs.FilterMessageSnippet(what).Len() < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after %v, %d logs of %q, want %d", within, logs.FilterMessageSnippet(what).Len(), what, n)
			}
		}
	}
	// Registered as the proxy knows it, not as etcd does: a cut between
	// the write and its answer would leave the proxy unsure it ever
	// registered, and it would say so differently.
	waitLog("proxy registered", 1, 10*time.Second)
	if resp, err := cli.Get(context.Background(), resource.NewKeys(prefix).Proxy("cut-off")); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the proxy says it registered, but etcd has %v (%v)", resp, err)
	}

	gate.Cut()
	// At once: well before the keepalive (10s + 3s) would tell.
	waitLog("etcd is unreachable", 1, 3*time.Second)
	// The lease runs out; registering again fails, and is tried again.
	waitLog("proxy registration lost", 1, 10*time.Second)
	waitLog("registering the proxy failed", 1, 15*time.Second)

	gate.Open()
	waitLog("etcd is reachable again", 1, 15*time.Second)
	waitLog("proxy registered again", 1, 15*time.Second)
	for what, n := range map[string]int{"etcd is unreachable": 1, "proxy registration lost": 1, "etcd is reachable again": 1, "proxy registered again": 1} {
		if got := logs.FilterMessageSnippet(what).Len(); got != n {
			t.Errorf("%q logged %d times, want %d", what, got, n)
		}
	}
	if n := logs.FilterLevelExact(zap.WarnLevel).Len(); n != 2 {
		for _, e := range logs.FilterLevelExact(zap.WarnLevel).All() {
			t.Log(e.Message)
		}
		t.Errorf("%d warnings for one outage, want 2", n)
	}
	// And the watcher follows changes again.
	res := setAddr(t, st, "127.0.0.1:9300")
	a.until(t, "a change after the outage", atRev(res.Revision))
}
