package encryption

import (
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/wasm/wasmtest"
)

const (
	key1 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
	key2 = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
)

var (
	harnessOnce sync.Once
	harness     *wasmtest.Harness
	harnessErr  error
)

// plugin returns encryption.wasm running in the host with cfg. The
// upstream echoes x-echo-* request headers back as response headers.
func plugin(t testing.TB, cfg string) *wasmtest.Harness {
	t.Helper()
	harnessOnce.Do(func() {
		harness, harnessErr = wasmtest.Load("encryption.wasm", wasmtest.Options{
			Name:   "encryption",
			Config: []byte(`{}`),
			Upstream: func(ctx *fasthttp.RequestCtx) {
				for k, v := range ctx.Request.Header.All() {
					if strings.HasPrefix(strings.ToLower(string(k)), "x-echo-") {
						ctx.Response.Header.SetBytesKV(k, v)
					}
				}
			},
		})
	})
	if harnessErr != nil {
		t.Fatal(harnessErr)
	}
	h, err := harness.Configure([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func do(t testing.TB, h *wasmtest.Harness, r *wasmtest.Request) *wasmtest.Result {
	t.Helper()
	res, err := h.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func mtls(version, id string) *filter.TLSInfo {
	return &filter.TLSInfo{Version: version, PeerPresented: true, PeerVerified: true, PeerURISANs: []string{id}}
}

func TestPolicies(t *testing.T) {
	h := plugin(t, `{
		"policies": [
			{"name": "payments", "path_prefix": "/pay", "require": "mtls", "min_tls_version": "TLSv1.3",
			 "allowed_spiffe_ids": ["spiffe://example.org/ns/shop/*"], "allowed_trust_domains": ["partner.org"]},
			{"name": "users", "routes": ["users"], "require": "tls", "min_tls_version": "TLSv1.2"},
			{"name": "health", "path_prefix": "/health", "require": "none"}
		],
		"default": {"require": "tls"}}`)
	tls12 := &filter.TLSInfo{Version: "TLSv1.2"}
	tls13 := &filter.TLSInfo{Version: "TLSv1.3"}
	for _, tt := range []struct {
		name   string
		r      *wasmtest.Request
		reason string // "" means allowed
	}{
		{"plaintext default", &wasmtest.Request{Path: "/x"}, "TLS is required"},
		{"tls default", &wasmtest.Request{Path: "/x", TLS: tls12}, ""},
		{"health plaintext", &wasmtest.Request{Path: "/healthz"}, ""},
		{"users route plaintext", &wasmtest.Request{Path: "/u", Route: "users"}, "TLS is required"},
		{"users route tls", &wasmtest.Request{Path: "/u", Route: "users", TLS: tls12}, ""},
		{"pay plaintext", &wasmtest.Request{Path: "/pay"}, "TLS is required"},
		{"pay tls1.2", &wasmtest.Request{Path: "/pay", TLS: mtls("TLSv1.2", "spiffe://example.org/ns/shop/sa/a")}, "below the minimum TLSv1.3"},
		{"pay no client cert", &wasmtest.Request{Path: "/pay", TLS: tls13}, "mTLS"},
		{"pay unverified cert", &wasmtest.Request{Path: "/pay", TLS: &filter.TLSInfo{Version: "TLSv1.3",
			PeerPresented: true, PeerURISANs: []string{"spiffe://example.org/ns/shop/sa/a"}}}, "mTLS"},
		{"pay allowed id", &wasmtest.Request{Path: "/pay", TLS: mtls("TLSv1.3", "spiffe://example.org/ns/shop/sa/a")}, ""},
		{"pay allowed domain", &wasmtest.Request{Path: "/pay", TLS: mtls("TLSv1.3", "spiffe://partner.org/x")}, ""},
		{"pay other id", &wasmtest.Request{Path: "/pay", TLS: mtls("TLSv1.3", "spiffe://example.org/ns/db/sa/a")}, "not allowed"},
		{"pay not spiffe", &wasmtest.Request{Path: "/pay", TLS: mtls("TLSv1.3", "https://example.org/")}, "no SPIFFE ID"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, h, tt.r)
			if tt.reason == "" {
				if res.Status != 200 || res.Upstream == nil {
					t.Fatalf("status %d %q", res.Status, res.Body)
				}
				return
			}
			if res.Status != 403 || !strings.Contains(string(res.Body), tt.reason) || res.Details != "encryption_policy" {
				t.Fatalf("status %d body %q details %q, want 403 %q", res.Status, res.Body, res.Details, tt.reason)
			}
		})
	}
}

func TestHSTS(t *testing.T) {
	h := plugin(t, `{"hsts": {"include_subdomains": true, "preload": true}}`)
	res := do(t, h, &wasmtest.Request{TLS: &filter.TLSInfo{Version: "TLSv1.3"}})
	if got := res.Header.Get("strict-transport-security"); got != "max-age=31536000; includeSubDomains; preload" {
		t.Errorf("hsts %q", got)
	}
	if got := do(t, h, &wasmtest.Request{}).Header.Get("strict-transport-security"); got != "" {
		t.Errorf("hsts on cleartext %q", got)
	}
}

func TestHeaderEncryption(t *testing.T) {
	h := plugin(t, `{"keys": {"k1": "`+key1+`", "k2": "`+key2+`"}, "active_key": "k2",
		"encrypt_headers": ["x-echo-ssn", "x-card"], "decrypt_headers": ["x-echo-ssn", "x-echo-bad"]}`)
	res := do(t, h, wasmtest.NewRequest("GET /", "x-echo-ssn", "123-45-6789", "x-card", "4111", "x-echo-bad", "enc:v1:k1:AAAA"))
	up := res.Upstream.Header
	// The whole plain value must not show; a short piece of it may, by
	// chance, in the base64 of the ciphertext.
	for name, plain := range map[string]string{"x-echo-ssn": "123-45-6789", "x-card": "4111"} {
		v := up.Get(name)
		if !strings.HasPrefix(v, "enc:v1:k2:") || strings.Contains(v, plain) {
			t.Errorf("upstream %s = %q", name, v)
		}
	}
	if a, b := up.Get("x-echo-ssn"), do(t, h, wasmtest.NewRequest("GET /", "x-echo-ssn", "123-45-6789")).Upstream.Header.Get("x-echo-ssn"); a == b {
		t.Error("two encryptions of one value are equal: nonce reuse")
	}
	// The module sealed with the host's AES-GCM; the same code built
	// natively, whose host has none, opens with Go's: the two agree.
	kr, err := newKeyring(map[string]string{"k1": key1, "k2": key2}, "k2")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := kr.open("X-Echo-SSN", up.Get("x-echo-ssn")); err != nil || v != "123-45-6789" {
		t.Errorf("the sealed value opens natively as %q, %v", v, err)
	}
	if got := res.Header.Get("x-echo-ssn"); got != "123-45-6789" {
		t.Errorf("decrypted response header %q", got)
	}
	if got := res.Header.Get("x-echo-bad"); got != "" {
		t.Errorf("undecryptable header passed on: %q", got)
	}
	if v, _ := h.Metric("encryption.decrypt_failed"); v < 1 {
		t.Errorf("decrypt_failed %v", v)
	}
}

func TestRedact(t *testing.T) {
	h := plugin(t, `{"redact_headers": ["Authorization", "cookie"]}`)
	res := do(t, h, wasmtest.NewRequest("GET /"))
	if got := res.FilterState["wasm.encryption.redact"]; got != "authorization,cookie" {
		t.Errorf("filter state %v", res.FilterState)
	}
}

func TestBadConfig(t *testing.T) {
	plugin(t, `{}`)
	for _, cfg := range []string{
		`{"policies":[{"require":"maybe"}]}`,
		`{"policies":[{"require":"tls","min_tls_version":"SSLv3"}]}`,
		`{"policies":[{"require":"tls","allowed_trust_domains":["a"]}]}`,
		`{"keys":{"k":"c2hvcnQ="},"active_key":"k"}`,
		`{"keys":{"k":"` + key1 + `"},"active_key":"other"}`,
		`{"encrypt_headers":["x"]}`,
		`{"nope":true}`,
	} {
		if _, err := harness.Configure([]byte(cfg)); err == nil {
			t.Errorf("%s accepted", cfg)
		}
	}
}

func TestSealOpen(t *testing.T) {
	kr, err := newKeyring(map[string]string{"a": key1, "b": key2}, "a")
	if err != nil {
		t.Fatal(err)
	}
	s, err := kr.seal("X-Secret", "v")
	if err != nil {
		t.Fatal(err)
	}
	if hostAES != aesInGuest {
		t.Errorf("with no AES-GCM in the host, hostAES = %d", hostAES)
	}
	if v, err := kr.open("x-secret", s); err != nil || v != "v" {
		t.Fatalf("open %q %v", v, err)
	}
	if _, err := kr.open("x-other", s); err == nil {
		t.Error("a value moved to another header decrypted")
	}
	if _, err := kr.open("x-secret", "plain"); err != errNotSealed {
		t.Errorf("plain: %v", err)
	}
}
