// Command features exercises headers, bodies, local responses and
// properties. What it does to a request is chosen by request headers, so
// one module serves many tests:
//
//	x-local: <code>       answer locally with that status and body "local",
//	                      and the gRPC status x-local-grpc when given
//	x-rewrite: <path>     rewrite :path; x-authority rewrites :authority
//	x-prop: <path>        read a property (dot separated) into x-prop-value
//	                      (integers as decimal, bools as true/false)
//	x-set-prop: <k>=<v>   set a property
//	x-count: <name>       define the counter <name> and add 1 to it
//	x-foreign: <name>     call that foreign function with x-foreign-arg
//	                      (hex); its result (hex) or error goes to
//	                      x-foreign-result
//	x-remove: <name>      remove a request header
//	x-body: buffer|chunk|reject  buffer: upper-case the whole request body once
//	                      complete; chunk: append "|" to every chunk;
//	                      reject: answer 403 "rejected by body" once the
//	                      body is complete
//
// With the configuration "request-headers-only" it tells the host
// (wasmgate_callbacks) that it needs the request headers callback alone.
//
// Every request gets x-config: <plugin configuration>, and every response
// x-seen-status: <:status> and x-root-id: <plugin_root_id>. Response
// bodies get "-end" appended.
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func init() { proxywasm.SetVMContext(&vm{}) }

func main() {}

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	config string
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	c, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogErrorf("reading configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	if string(c) == "reject" {
		return types.OnPluginStartStatusFailed
	}
	if string(c) == "request-headers-only" {
		// wasmgate_callbacks: only the request headers callback.
		if _, err := proxywasm.CallForeignFunction("wasmgate_callbacks", []byte{1, 0, 0, 0}); err != nil {
			proxywasm.LogErrorf("declaring callbacks: %v", err)
			return types.OnPluginStartStatusFailed
		}
	}
	p.config = string(c)
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &stream{p: p} }

type stream struct {
	types.DefaultHttpContext
	p    *plugin
	mode string
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	must(proxywasm.AddHttpRequestHeader("x-config", s.p.config))
	if code, err := proxywasm.GetHttpRequestHeader("x-local"); err == nil {
		n, _ := strconv.Atoi(code)
		grpc := int64(-1)
		if g, err := proxywasm.GetHttpRequestHeader("x-local-grpc"); err == nil {
			grpc, _ = strconv.ParseInt(g, 10, 32)
		}
		must(proxywasm.SendHttpResponse(uint32(n), [][2]string{{"x-local", "yes"}}, []byte("local"), int32(grpc)))
		return types.ActionPause
	}
	if p, err := proxywasm.GetHttpRequestHeader("x-rewrite"); err == nil {
		must(proxywasm.ReplaceHttpRequestHeader(":path", p))
	}
	if a, err := proxywasm.GetHttpRequestHeader("x-authority"); err == nil {
		must(proxywasm.ReplaceHttpRequestHeader(":authority", a))
	}
	if h, err := proxywasm.GetHttpRequestHeader("x-remove"); err == nil {
		must(proxywasm.RemoveHttpRequestHeader(h))
	}
	if p, err := proxywasm.GetHttpRequestHeader("x-prop"); err == nil {
		must(proxywasm.ReplaceHttpRequestHeader("x-prop-value", property(p)))
	}
	if kv, err := proxywasm.GetHttpRequestHeader("x-set-prop"); err == nil {
		k, v, _ := strings.Cut(kv, "=")
		must(proxywasm.SetProperty(strings.Split(k, "."), []byte(v)))
	}
	if name, err := proxywasm.GetHttpRequestHeader("x-count"); err == nil {
		// A counter named by the request, as the SDK's metrics example
		// names one by a header's value.
		proxywasm.DefineCounterMetric(name).Increment(1)
	}
	if name, err := proxywasm.GetHttpRequestHeader("x-foreign"); err == nil {
		arg, _ := proxywasm.GetHttpRequestHeader("x-foreign-arg")
		a, _ := hex.DecodeString(arg)
		ret, err := proxywasm.CallForeignFunction(name, a)
		if err != nil {
			must(proxywasm.ReplaceHttpRequestHeader("x-foreign-result", "error:"+err.Error()))
		} else {
			must(proxywasm.ReplaceHttpRequestHeader("x-foreign-result", hex.EncodeToString(ret)))
		}
	}
	if hs, err := proxywasm.GetHttpRequestHeaders(); err == nil {
		must(proxywasm.ReplaceHttpRequestHeader("x-header-count", strconv.Itoa(len(hs))))
	}
	s.mode, _ = proxywasm.GetHttpRequestHeader("x-body")
	return types.ActionContinue
}

func property(path string) string {
	v, err := proxywasm.GetProperty(strings.Split(path, "."))
	if err != nil {
		return "error:" + err.Error()
	}
	switch path {
	case "source.port", "destination.port", "response.code", "connection.id", "request.size", "upstream.port":
		if len(v) == 8 {
			return strconv.FormatUint(binary.LittleEndian.Uint64(v), 10)
		}
	case "connection.mtls":
		if len(v) == 1 {
			return strconv.FormatBool(v[0] == 1)
		}
	case "request.time":
		if len(v) == 8 && binary.LittleEndian.Uint64(v) > 0 {
			return "set"
		}
	case "request.headers":
		return strconv.Itoa(len(deserialize(v)))
	}
	return string(v)
}

// deserialize decodes a map in the ABI's header-map format.
func deserialize(b []byte) [][2]string {
	if len(b) < 4 {
		return nil
	}
	n := int(binary.LittleEndian.Uint32(b))
	sizes, data := b[4:], b[4+8*n:]
	out := make([][2]string, 0, n)
	for i := 0; i < n; i++ {
		kl := int(binary.LittleEndian.Uint32(sizes[8*i:]))
		vl := int(binary.LittleEndian.Uint32(sizes[8*i+4:]))
		out = append(out, [2]string{string(data[:kl]), string(data[kl+1 : kl+1+vl])})
		data = data[kl+vl+2:]
	}
	return out
}

func (s *stream) OnHttpRequestBody(size int, end bool) types.Action {
	switch s.mode {
	case "buffer":
		if !end {
			return types.ActionPause
		}
		b, err := proxywasm.GetHttpRequestBody(0, size)
		must(err)
		must(proxywasm.ReplaceHttpRequestBody(bytes.ToUpper(b)))
	case "chunk":
		must(proxywasm.AppendHttpRequestBody([]byte("|")))
	case "reject":
		if !end {
			return types.ActionPause
		}
		must(proxywasm.SendHttpResponse(403, nil, []byte("rejected by body"), -1))
		return types.ActionPause
	}
	return types.ActionContinue
}

func (s *stream) OnHttpResponseHeaders(int, bool) types.Action {
	st, err := proxywasm.GetHttpResponseHeader(":status")
	must(err)
	must(proxywasm.AddHttpResponseHeader("x-seen-status", st))
	root, err := proxywasm.GetProperty([]string{"plugin_root_id"})
	must(err)
	must(proxywasm.AddHttpResponseHeader("x-root-id", string(root)))
	return types.ActionContinue
}

func (s *stream) OnHttpResponseBody(size int, end bool) types.Action {
	if end {
		must(proxywasm.AppendHttpResponseBody([]byte("-end")))
	}
	return types.ActionContinue
}

func must(err error) {
	if err != nil {
		proxywasm.LogErrorf("host call failed: %v", err)
	}
}
