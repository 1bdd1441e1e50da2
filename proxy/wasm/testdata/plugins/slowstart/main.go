// Command slowstart is a module that is slow to start, as a large filter
// compiling rules at start-up is: on_vm_start waits for the duration its
// VM configuration names (Go syntax, "5s"; empty for none). Every request
// gets x-version: <plugin configuration>.
package main

import (
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func init() { proxywasm.SetVMContext(&vm{}) }

func main() {}

type vm struct{ types.DefaultVMContext }

func (*vm) OnVMStart(int) types.OnVMStartStatus {
	c, err := proxywasm.GetVMConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		return types.OnVMStartStatusFailed
	}
	if len(c) > 0 {
		d, err := time.ParseDuration(string(c))
		if err != nil {
			proxywasm.LogErrorf("vm configuration: %v", err)
			return types.OnVMStartStatusFailed
		}
		time.Sleep(d)
	}
	return types.OnVMStartStatusOK
}

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	version string
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	c, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		return types.OnPluginStartStatusFailed
	}
	p.version = string(c)
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &stream{p: p} }

type stream struct {
	types.DefaultHttpContext
	p *plugin
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	_ = proxywasm.AddHttpRequestHeader("x-version", s.p.version)
	return types.ActionContinue
}
