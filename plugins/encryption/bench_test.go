package encryption

import (
	"testing"

	"github.com/wasmgate/wasmgate/proxy/wasm/wasmtest"
)

// BenchmarkRequest is one request through the plugin in the harness: an
// mTLS policy with SPIFFE checks, HSTS, and one header sealed on the way
// up and opened on the way back.
func BenchmarkRequest(b *testing.B) {
	h := plugin(b, `{"policies":[{"require":"mtls","min_tls_version":"TLSv1.3","allowed_trust_domains":["example.org"]}],
		"hsts":{},"keys":{"k1":"`+key1+`"},"active_key":"k1","encrypt_headers":["x-echo-ssn"],"decrypt_headers":["x-echo-ssn"]}`)
	req := &wasmtest.Request{Path: "/pay", TLS: mtls("TLSv1.3", "spiffe://example.org/ns/shop/sa/a"),
		Header: [][2]string{{"x-echo-ssn", "123-45-6789"}}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := h.Do(req)
		if err != nil || res.Header.Get("x-echo-ssn") != "123-45-6789" {
			b.Fatal(err)
		}
	}
}
