// Command addheader is the smallest useful filter: it adds one request
// header. The host's benchmarks and allocation tests run it.
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func init() {
	proxywasm.SetHttpContext(func(uint32) types.HttpContext { return &stream{} })
}

func main() {}

type stream struct{ types.DefaultHttpContext }

func (*stream) OnHttpRequestHeaders(int, bool) types.Action {
	if err := proxywasm.AddHttpRequestHeader("x-wasm", "1"); err != nil {
		proxywasm.LogErrorf("adding header: %v", err)
	}
	return types.ActionContinue
}
