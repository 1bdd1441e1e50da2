// Package demo is the backend that `wasmgate up` puts behind the proxy: a
// small HTTP service that says which instance answered and what it got.
package demo

import (
	"encoding/json"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// Backend is one running demo instance.
type Backend struct {
	Name string
	ln   net.Listener
	srv  *fasthttp.Server
}

// Start serves a demo instance on addr ("127.0.0.1:0" for any port).
//
//	/            JSON: the instance, method, path and request headers
//	/delay?ms=N  the same, after N milliseconds
//	/status/N    answers with status N
//	/bytes/N     N bytes of body
func Start(name, addr string) (*Backend, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &Backend{Name: name, ln: ln}
	b.srv = &fasthttp.Server{Handler: b.serve, Name: "wasmgate-demo"}
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

// Addr is the instance's host:port.
func (b *Backend) Addr() string { return b.ln.Addr().String() }

// Close stops the instance.
func (b *Backend) Close() error { return b.srv.Shutdown() }

func (b *Backend) serve(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch {
	case len(path) > 8 && path[:8] == "/status/":
		code, err := strconv.Atoi(path[8:])
		if err != nil || code < 100 || code > 599 {
			code = 400
		}
		ctx.SetStatusCode(code)
		ctx.SetBodyString(strconv.Itoa(code) + " from " + b.Name + "\n")
		return
	case len(path) > 7 && path[:7] == "/bytes/":
		n, err := strconv.Atoi(path[7:])
		if err != nil || n < 0 || n > 64<<20 {
			ctx.Error("bad size\n", fasthttp.StatusBadRequest)
			return
		}
		ctx.SetContentType("application/octet-stream")
		body := make([]byte, n)
		for i := range body {
			body[i] = 'a' + byte(i%26)
		}
		ctx.SetBody(body)
		return
	case path == "/delay":
		ms, _ := strconv.Atoi(string(ctx.QueryArgs().Peek("ms")))
		if ms > 0 && ms <= 60000 {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
	}
	headers := map[string]string{}
	for k, v := range ctx.Request.Header.All() {
		headers[string(k)] = string(v)
	}
	out, _ := json.MarshalIndent(map[string]any{
		"instance": b.Name,
		"method":   string(ctx.Method()),
		"path":     string(ctx.RequestURI()),
		"headers":  headers,
	}, "", "  ")
	ctx.SetContentType("application/json")
	ctx.SetBody(append(out, '\n'))
}
