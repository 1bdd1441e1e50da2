// Command httpcall asks an authorization service before letting a request
// through. The configuration names the cluster to call. The request pauses
// until the answer: 200 resumes it with x-auth set to the answer's body;
// any other answer, or a failed call, ends it with a local 403 (503 when
// the call failed).
package main

import (
	"strconv"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func init() { proxywasm.SetVMContext(&vm{}) }

func main() {}

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	cluster string
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	c, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		proxywasm.LogErrorf("reading configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	p.cluster = string(c)
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &stream{p: p} }

type stream struct {
	types.DefaultHttpContext
	p *plugin
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	hs := [][2]string{
		{":method", "GET"}, {":path", "/check?for=" + path}, {":authority", "auth"},
		{"x-user", header("x-user")},
	}
	_, err := proxywasm.DispatchHttpCall(s.p.cluster, hs, nil, nil, 2000, s.answer)
	if err != nil {
		proxywasm.LogWarnf("dispatch to %q: %v", s.p.cluster, err)
		_ = proxywasm.SendHttpResponse(500, [][2]string{{"x-dispatch-error", err.Error()}}, []byte("dispatch failed"), -1)
		return types.ActionPause
	}
	return types.ActionPause
}

func header(name string) string {
	v, _ := proxywasm.GetHttpRequestHeader(name)
	return v
}

func (s *stream) answer(numHeaders, bodySize, _ int) {
	if numHeaders == 0 {
		_ = proxywasm.SendHttpResponse(503, nil, []byte("auth unavailable"), -1)
		return
	}
	status := ""
	hs, _ := proxywasm.GetHttpCallResponseHeaders()
	for _, h := range hs {
		if h[0] == ":status" {
			status = h[1]
		}
	}
	body, _ := proxywasm.GetHttpCallResponseBody(0, bodySize)
	if status != "200" {
		_ = proxywasm.SendHttpResponse(403, [][2]string{{"x-auth-status", status}}, []byte("denied"), -1)
		return
	}
	_ = proxywasm.AddHttpRequestHeader("x-auth", string(body))
	_ = proxywasm.AddHttpRequestHeader("x-auth-len", strconv.Itoa(bodySize))
	_ = proxywasm.ResumeHttpRequest()
}
