package wasmtest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/wasm/wasmtest"
)

var (
	helloOnce sync.Once
	helloPath string
	helloErr  error
)

// hello builds the SDK's hello example once per test binary.
func hello(t testing.TB) string {
	t.Helper()
	helloOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wasmtest-hello")
		if err != nil {
			helloErr = err
			return
		}
		helloPath = filepath.Join(dir, "hello.wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false", "-o", helloPath, ".")
		cmd.Dir = filepath.Join("..", "..", "..", "sdk", "examples", "hello")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			helloErr = err
			helloPath = string(out)
		}
	})
	if helloErr != nil {
		t.Fatalf("building hello: %v\n%s", helloErr, helloPath)
	}
	return helloPath
}

func TestHello(t *testing.T) {
	h, err := wasmtest.Load(hello(t), wasmtest.Options{Config: []byte(`{"greeting":"hi"}`)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	res, err := h.Do(wasmtest.NewRequest("GET /hello", "user-agent", "test"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || string(res.Body) != "hi\n" || !res.Local || res.Upstream != nil {
		t.Fatalf("GET /hello: %d %q local=%v upstream=%v", res.Status, res.Body, res.Local, res.Upstream)
	}
	if got := res.Header.Get("content-type"); got != "text/plain" {
		t.Errorf("content-type %q", got)
	}
	if len(res.Logs) != 1 || !strings.Contains(res.Logs[0].Message, "greeting test") {
		t.Errorf("logs %v", res.Logs)
	}
	if v, _ := h.Metric("hello.served"); v != 1 {
		t.Errorf("hello.served = %v", v)
	}

	res, err = h.Do(wasmtest.NewRequest("POST /other"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || string(res.Body) != "upstream" || res.Upstream == nil {
		t.Fatalf("POST /other: %d %q", res.Status, res.Body)
	}
	if got := res.Upstream.Header.Get("x-hello"); got != "hi" {
		t.Errorf("x-hello upstream = %q", got)
	}

	other, err := h.Configure([]byte(`{"greeting":"bonjour"}`))
	if err != nil {
		t.Fatal(err)
	}
	res, err = other.Do(&wasmtest.Request{Path: "/hello", Body: []byte("abc"), Chunks: 3})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Body) != "bonjour\n" {
		t.Errorf("configured view answered %q", res.Body)
	}
}

func TestBadConfig(t *testing.T) {
	_, err := wasmtest.Load(hello(t), wasmtest.Options{Config: []byte(`{`)})
	if err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Fatalf("err = %v", err)
	}
}

func TestUpstreamHandler(t *testing.T) {
	h, err := wasmtest.Load(hello(t), wasmtest.Options{Upstream: func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(201)
		ctx.Response.Header.Set("x-up", string(ctx.Request.Header.Peek("x-hello")))
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	res, err := h.Do(wasmtest.NewRequest("GET /"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 201 || res.Header.Get("x-up") != "hello" {
		t.Fatalf("%d %v", res.Status, res.Header)
	}
}

// BenchmarkHarness is the harness's own cost per request: the hello
// plugin setting one request header, the smallest useful filter.
func BenchmarkHarness(b *testing.B) {
	h, err := wasmtest.Load(hello(b), wasmtest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	req := wasmtest.NewRequest("GET /x")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.Do(req); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConn drives a network filter (the host's tcpfilter test module,
// built with the proxy-wasm Go SDK) with no socket: held partial lines
// gather, bytes are rewritten both ways, a held line comes out when the
// filter's tick resumes it, a denied line closes the connection, and the
// close and log callbacks run once per connection.
func TestConn(t *testing.T) {
	h, err := wasmtest.Load("../testdata/tcpfilter.wasm", wasmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := h.Connect(wasmtest.ConnOptions{Remote: "10.1.2.3:5555", Cluster: "redis"})
	if err != nil {
		t.Fatal(err)
	}
	if up, err := c.Downstream([]byte("hel"), false); err != nil || up != nil {
		t.Errorf("a partial line: %q, %v; want it held", up, err)
	}
	if up, err := c.Downstream([]byte("lo secret\n"), false); err != nil || string(up) != "hello ******\n" {
		t.Errorf("the whole line: %q, %v", up, err)
	}
	if down, err := c.Upstream([]byte("pong\n"), false); err != nil || string(down) != "PONG\n" {
		t.Errorf("upstream: %q, %v", down, err)
	}
	if up, err := c.Downstream([]byte("PROPS\n"), false); err != nil || !strings.Contains(string(up), "source=10.1.2.3:5555") ||
		!strings.Contains(string(up), "cluster=redis") {
		t.Errorf("properties: %q, %v", up, err)
	}
	if up, err := c.Downstream([]byte("HOLD\n"), false); err != nil || up != nil {
		t.Errorf("HOLD: %q, %v; want it held", up, err)
	}
	if up, err := c.Resume(); err != nil || string(up) != "HELD BY TICK\n" {
		t.Errorf("after the tick: %q, %v", up, err)
	}
	c.Close()
	if _, err := c.Downstream([]byte("late\n"), false); err != wasmtest.ErrClosed {
		t.Errorf("after Close: %v", err)
	}

	c2, err := h.Connect(wasmtest.ConnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Downstream([]byte("DENY\n"), false); err != wasmtest.ErrClosed || !c2.Closed() {
		t.Errorf("DENY: %v, closed %v", err, c2.Closed())
	}
	for name, want := range map[string]float64{"connections": 2, "closes_remote": 1, "closes_local": 1, "done": 2} {
		if got, _ := h.Metric(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
