package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
)

// hotPath drives one listener's request path directly, as the fasthttp
// server would, against real upstreams on loopback.
type hotPath struct {
	h   *handler
	ctx *fasthttp.RequestCtx
	tpl fasthttp.Request
	bw  *bufio.Writer
}

func newHotPath(tb testing.TB, yaml string, method, uri, host string) *hotPath {
	tb.Helper()
	return newHotPathWith(tb, Options{}, yaml, method, uri, host)
}

// newHotPathWith is newHotPath with the server's options.
func newHotPathWith(tb testing.TB, opts Options, yaml string, method, uri, host string) *hotPath {
	tb.Helper()
	cfg, err := config.Parse([]byte(yaml), "bench.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Listeners[0].Address = "127.0.0.1:0"
	s := NewServer(opts)
	if err := s.Apply(context.Background(), cfg, ""); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	hp := &hotPath{h: &handler{srv: s, listener: cfg.Listeners[0].Name}, ctx: &fasthttp.RequestCtx{}, bw: bufio.NewWriter(io.Discard)}
	hp.tpl.Header.SetMethod(method)
	hp.tpl.SetRequestURI(uri)
	hp.tpl.Header.SetHost(host)
	hp.tpl.Header.Set("User-Agent", "bench")
	hp.ctx.Init(&hp.tpl, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	return hp
}

// do serves one request and writes its response to nowhere, which closes a
// streamed body and so finishes the exchange. It returns the status.
func (hp *hotPath) do(tb testing.TB) int {
	ctx := hp.ctx
	hp.tpl.CopyTo(&ctx.Request)
	ctx.Response.Reset()
	hp.h.serve(ctx)
	status := ctx.Response.StatusCode()
	if err := ctx.Response.Write(hp.bw); err != nil {
		tb.Fatal(err)
	}
	_ = hp.bw.Flush()
	return status
}

// startUpstream serves body on loopback and returns its address.
func startUpstream(tb testing.TB, body []byte) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain")
		ctx.SetBody(body)
	}}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

func proxyConfig(upstreams ...string) string {
	eps := ""
	for _, u := range upstreams {
		eps += "      - address: " + u + "\n"
	}
	return `
admin: {address: "off"}
listeners:
  - name: public
    address: 127.0.0.1:0
clusters:
  - name: backend
    endpoints:
` + eps + `
virtual_hosts:
  - name: api
    domains: ["api.example.com"]
    routes:
      - name: users
        match: {prefix: /users/, methods: [GET, POST]}
        cluster: backend
  - name: default
    domains: ["*"]
    response_headers:
      set: [{name: x-served-by, value: wasmgate}]
    routes:
      - name: static
        match: {path: /static}
        direct_response: {status: 200, body: "static\n"}
      - name: v2
        match:
          prefix: /v2/
          headers: [{name: x-version, exact: "2"}]
        cluster: backend
      - name: all
        match: {prefix: /}
        request_headers:
          set: [{name: x-route, value: all}]
        cluster: backend
`
}
