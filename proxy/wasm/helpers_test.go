package wasm

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// testCacheDir keeps compiled test modules across test binaries, so each
// module compiles once per machine rather than once per test.
var testCacheDir = filepath.Join(os.TempDir(), "wasmgate-wasm-test-cache")

// upstream is a real local HTTP server behind a real filter.Upstreams.
type upstream struct {
	addr    string
	clients sync.Map // cluster -> *fasthttp.HostClient
	targets map[string]string
}

var (
	upOnce sync.Once
	up     *upstream
)

// testUpstreams starts, once per test binary, a server that answers
// /check?for=... with 200 and "<user>-ok" when x-user is alice, else 403.
// Cluster "auth" reaches it; "down" reaches a closed port.
func testUpstreams(t testing.TB) *upstream {
	upOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
			user := string(ctx.Request.Header.Peek("x-user"))
			if user != "alice" {
				ctx.SetStatusCode(403)
				return
			}
			ctx.SetBodyString(user + "-ok")
		}}
		go srv.Serve(ln)
		closed, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		downAddr := closed.Addr().String()
		closed.Close()
		up = &upstream{addr: ln.Addr().String(), targets: map[string]string{
			"auth": ln.Addr().String(), "down": downAddr,
		}}
	})
	return up
}

// Call implements filter.Upstreams.
func (u *upstream) Call(cluster string, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	addr, ok := u.targets[cluster]
	if !ok {
		return filter.ErrUnknownCluster
	}
	c, _ := u.clients.LoadOrStore(cluster, &fasthttp.HostClient{Addr: addr})
	return c.(*fasthttp.HostClient).DoTimeout(req, resp, timeout)
}

type managerOpt func(*Options)

func withRegistry(r prometheus.Registerer) managerOpt { return func(o *Options) { o.Registerer = r } }

// newStopManager is newTestManager stopping calls as stop says. A mode
// other than the default gets its own compilation cache: wazero's cache
// key ignores the termination setting (see RATIONALE).
func newStopManager(tb testing.TB, stop stopMode) *Manager {
	tb.Helper()
	m := newTestManager(tb)
	m.stop = stop
	if stop != stopInterrupt {
		m.cache = wazero.NewCompilationCache()
	}
	return m
}

func newTestManager(t testing.TB, opts ...managerOpt) *Manager {
	t.Helper()
	o := Options{
		CacheDir:  testCacheDir,
		Upstreams: testUpstreams(t),
		Node:      &filter.Node{ID: "node-1", Metadata: map[string]string{"zone": "z1"}},
		// Tests expect Prepare to return the plugins they asked for,
		// however slow the machine; TestSlowStartReloadUnderLoad sets
		// its own wait.
		StartWait: -1,
	}
	if tt, ok := t.(*testing.T); ok {
		o.Logger = zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel))
	} else {
		o.Logger = zap.NewNop()
	}
	for _, f := range opts {
		f(&o)
	}
	m, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func testPlugin(name, module string, mods ...func(*config.Plugin)) config.Plugin {
	p := config.Plugin{
		Name:          name,
		File:          filepath.Join("testdata", module+".wasm"),
		PoolSize:      2,
		FailurePolicy: config.FailClosed,
	}
	for _, f := range mods {
		f(&p)
	}
	return p
}

// prepare starts plugins, activates them and returns the set.
func prepare(t testing.TB, m *Manager, plugins ...config.Plugin) *Set {
	t.Helper()
	set, err := m.Prepare(context.Background(), plugins)
	if err != nil {
		t.Fatal(err)
	}
	m.Activate(set)
	return set
}

func factoryOf(t testing.TB, set *Set, plugin string) filter.Factory {
	t.Helper()
	f, err := set.Factory(config.FilterRef{Plugin: plugin}, "route-a")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// newExchange builds an exchange around a real fasthttp.RequestCtx.
// headers are name, value pairs.
func newExchange(target string, headers ...string) *filter.Exchange {
	var req fasthttp.Request
	req.SetRequestURI(target)
	req.Header.SetMethod("GET")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	ctx := new(fasthttp.RequestCtx)
	remote := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 40000}
	ctx.Init(&req, remote, nil)
	x := filter.NewExchange()
	x.Ctx = ctx
	x.Conn = &filter.ConnInfo{ID: 42,
		Remote: remote.AddrPort(),
		Local:  netipMust("192.0.2.1:8443"),
	}
	x.Route, x.Cluster, x.Listener, x.VirtualHost = "route-a", "backend", "main", "vh"
	x.Protocol = "HTTP/1.1"
	x.RequestID = []byte("req-1")
	x.Start = time.Now()
	return x
}

// run drives a request through the stream as the proxy does: request
// headers (waiting out a pause), then, unless the filter answered, a
// canned upstream response; then log and done. It returns the statuses
// of the request and response headers callbacks.
func run(t testing.TB, f filter.Factory, x *filter.Exchange) (req, resp filter.Status) {
	t.Helper()
	s, err := f.NewStream(x)
	if err != nil {
		t.Fatalf("NewStream: %v", err)
	}
	defer s.Done(x)
	req = s.OnRequestHeaders(x, true)
	if req == filter.Pause && !x.Wait(5*time.Second) {
		t.Fatal("paused request was never resumed")
	}
	if req == filter.Stop || x.Local() {
		s.OnLog(x)
		return req, filter.Continue
	}
	x.Ctx.Response.SetStatusCode(200)
	x.Ctx.Response.Header.Set("x-upstream", "1")
	resp = s.OnResponseHeaders(x, false)
	body := filter.Body{B: []byte("hello")}
	s.OnResponseBody(x, &body, true)
	x.Ctx.Response.SetBodyRaw(body.B)
	s.OnLog(x)
	return req, resp
}

func netipMust(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
