package wasm

import (
	"testing"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// TestFieldCount checks that the number of fields a callback passes to
// the guest is the number the guest then reads from the map.
func TestFieldCount(t *testing.T) {
	for _, headers := range [][]string{
		nil,
		{"Content-Type", "text/plain", "User-Agent", "ua/1"},
		{"Cookie", "a=1", "Cookie", "b=2", "X-A", "1", "X-A", "2", "Connection", "close"},
		{"Content-Length", "5", "Trailer", "X-T", "Authorization", "Bearer x"},
	} {
		x := newExchange("http://example.com/p?q=1", headers...)
		x.Ctx.Response.Header.Set("X-R", "1")
		x.Ctx.Response.Header.SetContentType("application/json")
		x.Ctx.Response.Header.Add("Set-Cookie", "s=1")
		x.Ctx.Request.Header.SetTrailer("X-T")
		x.Ctx.Request.Header.Set("X-T", "v")
		in := &instance{cur: &stream{x: x}}
		for _, mt := range []abi.MapType{abi.MapHTTPRequestHeaders, abi.MapHTTPResponseHeaders, abi.MapHTTPRequestTrailers, abi.MapHTTPResponseTrailers} {
			n := in.fieldCount(mt)
			if st := in.collect(mt); st != abi.StatusOK {
				t.Fatalf("collect(%d): %v", mt, st)
			}
			if n != len(in.kv) {
				t.Errorf("headers %q, map %d: counted %d fields, collect gathers %d", headers, mt, n, len(in.kv))
			}
		}
	}
	if n := (&instance{}).fieldCount(abi.MapHTTPRequestHeaders); n != 0 {
		t.Errorf("outside a stream: %d fields", n)
	}
}
