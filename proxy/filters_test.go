package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// bodyCounter is a native filter that sees every request body chunk and
// upper-cases it, so the test can tell its output from its input.
type bodyCounter struct{ seen atomic.Int64 }

func (b *bodyCounter) Name() string { return "body-counter" }
func (b *bodyCounter) NewStream(*filter.Exchange) (filter.Stream, error) {
	return &bodyCounterStream{f: b}, nil
}

type bodyCounterStream struct{ f *bodyCounter }

func (s *bodyCounterStream) OnRequestHeaders(*filter.Exchange, bool) filter.Status {
	return filter.Continue
}
func (s *bodyCounterStream) OnRequestBody(_ *filter.Exchange, body *filter.Body, _ bool) filter.Status {
	s.f.seen.Add(int64(len(body.B)))
	body.B = bytes.ToUpper(body.B)
	return filter.Continue
}
func (s *bodyCounterStream) OnRequestTrailers(*filter.Exchange) filter.Status { return filter.Continue }
func (s *bodyCounterStream) OnResponseHeaders(*filter.Exchange, bool) filter.Status {
	return filter.Continue
}
func (s *bodyCounterStream) OnResponseBody(*filter.Exchange, *filter.Body, bool) filter.Status {
	return filter.Continue
}
func (s *bodyCounterStream) OnResponseTrailers(*filter.Exchange) filter.Status {
	return filter.Continue
}
func (s *bodyCounterStream) OnLog(*filter.Exchange) {}
func (s *bodyCounterStream) Done(*filter.Exchange)  {}

// nativePlugins serves one native factory for every attachment.
type nativePlugins struct{ f filter.Factory }

func (p nativePlugins) Prepare(context.Context, []config.Plugin, filter.Upstreams) (filter.PluginSet, error) {
	return p, nil
}
func (p nativePlugins) Activate()                                                {}
func (p nativePlugins) Discard()                                                 {}
func (p nativePlugins) Factory(config.FilterRef, string) (filter.Factory, error) { return p.f, nil }

// TestRequestBodyFilterStreams sends bodies large enough to stream through
// a request body filter, with and without a declared length: the upstream
// gets the filter's output, whole.
func TestRequestBodyFilterStreams(t *testing.T) {
	var got atomic.Value
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &fasthttp.Server{StreamRequestBody: true, Handler: func(ctx *fasthttp.RequestCtx) {
		b, _ := io.ReadAll(ctx.RequestBodyStream())
		got.Store(b)
		ctx.SetBodyString("ok")
	}}
	go func() { _ = up.Serve(ln) }()
	t.Cleanup(func() { _ = up.Shutdown() })

	counter := &bodyCounter{}
	cfg, err := config.Parse([]byte(`
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
plugins: [{name: upper, file: native}]
clusters: [{name: up, endpoints: [{address: "`+ln.Addr().String()+`"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: up, filters: [{plugin: upper}]}]
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Options{Plugins: nativePlugins{counter}})
	if err := s.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	url := "http://" + s.Addr("main").String() + "/upload"

	body := bytes.Repeat([]byte("abcdefghij"), 50_000) // 500 KB: streams
	want := sha256.Sum256(bytes.ToUpper(body))
	for _, tc := range []struct {
		name   string
		reader func() io.Reader
	}{
		{"content-length", func() io.Reader { return bytes.NewReader(body) }},
		{"chunked", func() io.Reader { return io.MultiReader(bytes.NewReader(body)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counter.seen.Store(0)
			resp, err := http.Post(url, "text/plain", tc.reader())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			b, _ := got.Load().([]byte)
			if sha256.Sum256(b) != want {
				t.Errorf("the upstream got %d bytes, not the filter's %d upper-cased ones", len(b), len(body))
			}
			if n := counter.seen.Load(); n != int64(len(body)) {
				t.Errorf("the filter saw %d bytes, want %d", n, len(body))
			}
		})
	}
}

// stamp is a native filter that answers /deny itself and stamps every
// response it sees, its own included.
type stamp struct{}

func (stamp) Name() string { return "stamp" }
func (stamp) NewStream(*filter.Exchange) (filter.Stream, error) {
	return &stampStream{}, nil
}

type stampStream struct{ bodyCounterStream }

func (s *stampStream) OnRequestHeaders(x *filter.Exchange, _ bool) filter.Status {
	if string(x.Ctx.Path()) == "/deny" {
		x.SendLocalResponse(403, []byte("denied\n"), nil, "stamp_denied")
		return filter.Stop
	}
	return filter.Continue
}
func (s *stampStream) OnResponseHeaders(x *filter.Exchange, _ bool) filter.Status {
	x.Ctx.Response.Header.Set("x-stamp", "1")
	return filter.Continue
}

// TestLocalResponsesPassResponseFilters checks that answers made by a
// filter or by the proxy (an unreachable upstream) go through the response
// callbacks of the filters that saw the request.
func TestLocalResponsesPassResponseFilters(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := closed.Addr().String()
	closed.Close()
	cfg, err := config.Parse([]byte(`
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
plugins: [{name: stamp, file: native}]
clusters: [{name: dead, endpoints: [{address: "`+dead+`"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    filters: [{plugin: stamp}]
    routes: [{match: {prefix: /}, cluster: dead}]
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Options{Plugins: nativePlugins{stamp{}}})
	if err := s.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	base := "http://" + s.Addr("main").String()
	for path, status := range map[string]int{"/deny": 403, "/any": 502} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != status || resp.Header.Get("x-stamp") != "1" {
			t.Errorf("%s: status %d, x-stamp %q; want %d stamped", path, resp.StatusCode, resp.Header.Get("x-stamp"), status)
		}
	}
}

// stateSetter publishes filter state as the first-party filters do: a
// trace id, and the headers the access log must redact.
type stateSetter struct{}

func (stateSetter) Name() string { return "state" }
func (stateSetter) NewStream(*filter.Exchange) (filter.Stream, error) {
	return &stateStream{}, nil
}

type stateStream struct{ bodyCounterStream }

func (s *stateStream) OnRequestHeaders(x *filter.Exchange, _ bool) filter.Status {
	x.SetState("wasm.trace_id", []byte("4bf92f3577b34da6a3ce929d0e0e4736"))
	x.SetState("wasm.encryption.redact", []byte("Authorization, cookie"))
	return filter.Continue
}

// TestAccessLogDynamicFields logs request and response headers and filter
// state, with the headers a filter lists redacted.
func TestAccessLogDynamicFields(t *testing.T) {
	dir := t.TempDir()
	logPath := dir + "/access.log"
	cfg, err := config.Parse([]byte(`
admin: {address: "off"}
access_log:
  path: `+logPath+`
  fields: [status, request_header.x-tenant, request_header.authorization, response_header.content-type, filter_state.wasm.trace_id, filter_state.missing]
listeners: [{name: main, address: "127.0.0.1:0"}]
plugins: [{name: state, file: native}]
clusters: [{name: none, endpoints: [{address: "127.0.0.1:1"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    filters: [{plugin: state}]
    routes: [{match: {prefix: /}, direct_response: {status: 200, body: "hi", headers: [{name: content-type, value: text/plain}]}}]
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Options{Plugins: nativePlugins{stateSetter{}}})
	if err := s.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+s.Addr("main").String()+"/", nil)
	req.Header.Set("X-Tenant", "acme")
	req.Header.Set("Authorization", "Bearer secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := s.Shutdown(context.Background()); err != nil { // flushes the log
		t.Fatal(err)
	}
	line, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	want := map[string]any{
		"status":                       float64(200),
		"request_header.x-tenant":      "acme",
		"request_header.authorization": "[redacted]",
		"response_header.content-type": "text/plain",
		"filter_state.wasm.trace_id":   "4bf92f3577b34da6a3ce929d0e0e4736",
		"filter_state.missing":         nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("logged %v\nwant   %v", got, want)
	}
}

// headerEcho answers every request itself, with the request headers its
// request callback saw, one "name: value" line each, names lower case.
type headerEcho struct{}

func (headerEcho) Name() string { return "header-echo" }
func (headerEcho) NewStream(*filter.Exchange) (filter.Stream, error) {
	return &headerEchoStream{}, nil
}

type headerEchoStream struct{ bodyCounterStream }

func (s *headerEchoStream) OnRequestHeaders(x *filter.Exchange, _ bool) filter.Status {
	var b []byte
	for k, v := range x.Ctx.Request.Header.All() {
		b = append(append(append(append(b, bytes.ToLower(k)...), ": "...), v...), '\n')
	}
	x.SendLocalResponse(200, b, nil, "header_echo")
	return filter.Stop
}

// TestFiltersSeeTheClientsHeaders sends HTTP/1.1 requests with and
// without a Content-Length: a filter sees the client's headers and those
// the proxy adds before it (the request id, the forwarding headers), and
// no Content-Length the client did not send.
func TestFiltersSeeTheClientsHeaders(t *testing.T) {
	cfg, err := config.Parse([]byte(`
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
plugins: [{name: echo, file: native}]
clusters: [{name: up, endpoints: [{address: "127.0.0.1:1"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    filters: [{plugin: echo}]
    routes: [{match: {prefix: /}, cluster: up}]
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Options{Plugins: nativePlugins{headerEcho{}}})
	if err := s.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	tests := []struct {
		name, head, body string
		want             map[string]string // the client's headers, lower case
	}{
		{"POST without a length", "POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n", "",
			map[string]string{"host": "x", "x-a": "1"}},
		{"POST with length 0", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n", "",
			map[string]string{"host": "x", "content-length": "0"}},
		{"POST with a body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n", "hello",
			map[string]string{"host": "x", "content-length": "5"}},
		{"GET", "GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n", "",
			map[string]string{"host": "x", "user-agent": "t"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", s.Addr("main").String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.head+"\r\n"+tc.body); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got := map[string]string{}
			for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
				k, v, _ := strings.Cut(line, ": ")
				if k == "x-request-id" || strings.HasPrefix(k, "x-forwarded-") {
					continue // the proxy's own, added before the filters
				}
				got[k] = v
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("the filter saw %v, want %v", got, tc.want)
			}
		})
	}
}
