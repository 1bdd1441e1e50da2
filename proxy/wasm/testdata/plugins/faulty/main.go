// Command faulty breaks on demand. The request header x-fault chooses how:
//
//	panic   a Go panic in the callback
//	loop    a loop that never ends
//	oom     allocate until memory runs out
//	trap    a nil pointer dereference (a wasm trap in the guest)
//	slow    pause for 20ms inside the callback, then go on
//	spin    compute for x-spins iterations (CPU only), then go on
//
// Without x-fault it adds x-faulty: ok and continues.
package main

import (
	"strconv"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func init() {
	proxywasm.SetHttpContext(func(uint32) types.HttpContext { return &stream{} })
}

func main() {}

type stream struct{ types.DefaultHttpContext }

var (
	sink  [][]byte
	nilp  *int
	spins int
)

func (*stream) OnHttpRequestHeaders(int, bool) types.Action {
	fault, _ := proxywasm.GetHttpRequestHeader("x-fault")
	switch fault {
	case "panic":
		panic("faulty: asked to panic")
	case "loop":
		for {
			spins++
		}
	case "oom":
		for {
			sink = append(sink, make([]byte, 1<<20))
		}
	case "trap":
		*nilp = 1
	case "slow":
		time.Sleep(20 * time.Millisecond)
	case "spin":
		v, _ := proxywasm.GetHttpRequestHeader("x-spins")
		n, _ := strconv.Atoi(v)
		x := uint32(spins) | 1
		for i := 0; i < n; i++ {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
		}
		spins = int(x & 1)
	}
	_ = proxywasm.AddHttpRequestHeader("x-faulty", "ok")
	return types.ActionContinue
}
