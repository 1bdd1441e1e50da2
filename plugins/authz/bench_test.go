package authz

import (
	"strconv"
	"testing"

	"github.com/wasmgate/wasmgate/proxy/wasm/wasmtest"
)

func benchAuthz(b *testing.B, alg, kid, jwks string, cache int) {
	h := plugin(b, `{"jwt":{"audiences":["api"],"token_cache_size":`+strconv.Itoa(cache)+`,"jwks":`+jwks+`},
		"rules":[{"action":"deny","methods":["DELETE"]},{"action":"allow","principals":["alice"],"paths":["/orders*"]}]}`)
	req := &wasmtest.Request{Path: "/orders/7", Header: bearer(sign(b, alg, kid, tokenClaims()))}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := h.Do(req)
		if err != nil || res.Status != 200 {
			b.Fatal(err, res.Status)
		}
	}
}

// BenchmarkRequest* are one allowed request through the plugin in the
// harness: a JWT verified with the algorithm named (every time, with the
// token cache off), then the rules. BenchmarkRequestCached is the same
// client sending the same token again, as clients do.
func BenchmarkRequestHS256(b *testing.B) { benchAuthz(b, "HS256", "hs", hsJWKS(), -1) }
func BenchmarkRequestES256(b *testing.B) {
	testKeys(b)
	benchAuthz(b, "ES256", "e1", asymJWKS("r1", "e1"), -1)
}
func BenchmarkRequestRS256(b *testing.B) {
	testKeys(b)
	benchAuthz(b, "RS256", "r1", asymJWKS("r1", "e1"), -1)
}
func BenchmarkRequestCached(b *testing.B) {
	testKeys(b)
	benchAuthz(b, "RS256", "r1", asymJWKS("r1", "e1"), 0)
}
