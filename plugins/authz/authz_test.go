package authz

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/wasm/wasmtest"
)

var enc = base64.RawURLEncoding

// Keys of the tests, made once.
var (
	hsSecret = []byte("0123456789abcdef0123456789abcdef")
	rsaKey   *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	keysOnce sync.Once
)

func testKeys(t testing.TB) {
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	})
}

func hsJWKS() string {
	return fmt.Sprintf(`{"keys":[{"kty":"oct","kid":"hs","k":%q}]}`, enc.EncodeToString(hsSecret))
}

func asymJWKS(rsaKid, ecKid string) string {
	pad := func(b []byte) []byte { return append(make([]byte, 32-len(b)), b...) }
	return fmt.Sprintf(`{"keys":[{"kty":"RSA","kid":%q,"use":"sig","n":%q,"e":"AQAB"},{"kty":"EC","kid":%q,"crv":"P-256","x":%q,"y":%q}]}`,
		rsaKid, enc.EncodeToString(rsaKey.N.Bytes()), ecKid,
		enc.EncodeToString(pad(ecKey.X.Bytes())), enc.EncodeToString(pad(ecKey.Y.Bytes())))
}

// sign makes a compact JWS of claims with alg and kid.
func sign(t testing.TB, alg, kid string, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"})
	p, _ := json.Marshal(claims)
	signed := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	d := sha256.Sum256([]byte(signed))
	var sig []byte
	switch alg {
	case "HS256":
		m := hmac.New(sha256.New, hsSecret)
		m.Write([]byte(signed))
		sig = m.Sum(nil)
	case "RS256":
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, rsaKey, crypto.SHA256, d[:]); err != nil {
			t.Fatal(err)
		}
	case "ES256":
		r, s, err := ecdsa.Sign(rand.Reader, ecKey, d[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case "none":
	}
	return signed + "." + enc.EncodeToString(sig)
}

func tokenClaims(extra ...any) map[string]any {
	now := time.Now().Unix()
	c := map[string]any{"iss": "https://id.example", "aud": []string{"api"}, "sub": "alice", "exp": now + 300, "nbf": now - 10}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == nil {
			delete(c, extra[i].(string))
			continue
		}
		c[extra[i].(string)] = extra[i+1]
	}
	return c
}

// The clusters the plugin may call.
var (
	jwksFetches atomic.Int64
	jwksBody    atomic.Value // string
	extCalls    atomic.Int64
)

func idp(ctx *fasthttp.RequestCtx) {
	jwksFetches.Add(1)
	if string(ctx.Path()) != "/jwks.json" {
		ctx.SetStatusCode(404)
		return
	}
	ctx.SetBodyString(jwksBody.Load().(string))
}

func extAuthz(ctx *fasthttp.RequestCtx) {
	extCalls.Add(1)
	if string(ctx.Request.Header.Peek("x-authz-principal")) == "alice" && strings.HasPrefix(string(ctx.Path()), "/check/") {
		return
	}
	ctx.SetStatusCode(403)
}

var (
	harnessOnce sync.Once
	harness     *wasmtest.Harness
	harnessErr  error
)

// plugin returns authz.wasm running in the host with cfg.
func plugin(t testing.TB, cfg string) *wasmtest.Harness {
	t.Helper()
	testKeys(t)
	harnessOnce.Do(func() {
		jwksBody.Store(asymJWKS("r1", "e1"))
		harness, harnessErr = wasmtest.Load("authz.wasm", wasmtest.Options{
			Name:     "authz",
			Config:   []byte(`{"default":"allow"}`),
			Clusters: map[string]fasthttp.RequestHandler{"idp": idp, "ext": extAuthz},
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

func bearer(tok string) [][2]string { return [][2]string{{"authorization", "Bearer " + tok}} }

func TestJWTInline(t *testing.T) {
	h := plugin(t, `{"jwt":{"issuer":"https://id.example","audiences":["api"],"clock_skew":"30s","jwks":`+hsJWKS()+`},
		"default":"allow","principal_header":"x-principal"}`)
	now := time.Now().Unix()
	for _, tt := range []struct {
		name   string
		header [][2]string
		status int
		errStr string
	}{
		{"valid", bearer(sign(t, "HS256", "hs", tokenClaims())), 200, ""},
		{"no kid", bearer(sign(t, "HS256", "", tokenClaims())), 200, ""},
		{"aud as string", bearer(sign(t, "HS256", "hs", tokenClaims("aud", "api"))), 200, ""},
		{"expired within skew", bearer(sign(t, "HS256", "hs", tokenClaims("exp", now-20))), 200, ""},
		{"missing", nil, 401, ""},
		{"not bearer", [][2]string{{"authorization", "Basic YTpi"}}, 401, "invalid_token"},
		{"expired", bearer(sign(t, "HS256", "hs", tokenClaims("exp", now-40))), 401, "token expired"},
		{"not yet valid", bearer(sign(t, "HS256", "hs", tokenClaims("nbf", now+40))), 401, "not yet valid"},
		{"wrong issuer", bearer(sign(t, "HS256", "hs", tokenClaims("iss", "https://evil"))), 401, "issuer"},
		{"wrong audience", bearer(sign(t, "HS256", "hs", tokenClaims("aud", []string{"web"}))), 401, "audience"},
		{"alg none", bearer(sign(t, "none", "hs", tokenClaims())), 401, "algorithm"},
		{"unknown kid", bearer(sign(t, "HS256", "other", tokenClaims())), 401, "kid"},
		{"tampered", bearer(strings.Replace(sign(t, "HS256", "hs", tokenClaims()), ".", ".e30", 1)), 401, "invalid_token"},
		{"garbage", bearer("abc"), 401, "malformed"},
		{"no sub", bearer(sign(t, "HS256", "hs", tokenClaims("sub", nil))), 401, "sub"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := wasmtest.NewRequest("GET /x")
			r.Header = append(r.Header, tt.header...)
			r.Header = append(r.Header, [2]string{"x-principal", "forged"})
			res := do(t, h, r)
			if res.Status != tt.status {
				t.Fatalf("status %d, want %d (%s)", res.Status, tt.status, res.Header.Get("www-authenticate"))
			}
			if tt.status == 200 {
				if got := res.Upstream.Header.Get("x-principal"); got != "alice" {
					t.Errorf("x-principal upstream %q", got)
				}
				if res.FilterState["wasm.authz.principal"] != "alice" {
					t.Errorf("filter state %v", res.FilterState)
				}
				return
			}
			ch := res.Header.Get("www-authenticate")
			if !strings.HasPrefix(ch, `Bearer realm="wasmgate"`) || !strings.Contains(ch, tt.errStr) {
				t.Errorf("www-authenticate %q lacks %q", ch, tt.errStr)
			}
			if res.Details != "authz_unauthenticated" {
				t.Errorf("details %q", res.Details)
			}
		})
	}
}

func TestJWKSFetchedAndCached(t *testing.T) {
	h := plugin(t, `{"jwt":{"jwks_cluster":"idp","jwks_path":"/jwks.json","audiences":["api"]},"default":"allow"}`)
	before := jwksFetches.Load()
	for _, alg := range []string{"RS256", "ES256", "RS256"} {
		kid := map[string]string{"RS256": "r1", "ES256": "e1"}[alg]
		res := do(t, h, &wasmtest.Request{Path: "/y", Header: bearer(sign(t, alg, kid, tokenClaims()))})
		if res.Status != 200 {
			t.Fatalf("%s: status %d %s", alg, res.Status, res.Header.Get("www-authenticate"))
		}
	}
	if n := jwksFetches.Load() - before; n != 1 {
		t.Errorf("keys fetched %d times, want once", n)
	}
	// Rotation: a token with a new kid makes the plugin fetch again.
	jwksBody.Store(asymJWKS("r2", "e1"))
	defer jwksBody.Store(asymJWKS("r1", "e1"))
	res := do(t, h, &wasmtest.Request{Path: "/y", Header: bearer(sign(t, "RS256", "r2", tokenClaims()))})
	if res.Status != 200 {
		t.Fatalf("rotated key: status %d %s", res.Status, res.Header.Get("www-authenticate"))
	}
	if n := jwksFetches.Load() - before; n != 2 {
		t.Errorf("keys fetched %d times after rotation, want 2", n)
	}
}

func TestJWKSUnavailable(t *testing.T) {
	h := plugin(t, `{"jwt":{"jwks_cluster":"idp","jwks_path":"/missing"},"default":"allow"}`)
	res := do(t, h, &wasmtest.Request{Path: "/y", Header: bearer(sign(t, "RS256", "r1", tokenClaims()))})
	if res.Status != 401 || !strings.Contains(res.Header.Get("www-authenticate"), "unavailable") {
		t.Fatalf("status %d %q", res.Status, res.Header.Get("www-authenticate"))
	}
}

func TestRBAC(t *testing.T) {
	h := plugin(t, `{
		"jwt": {"jwks": `+hsJWKS()+`, "optional": true},
		"principal": {"peer": true},
		"rules": [
			{"name": "no-deletes", "action": "deny", "methods": ["DELETE"]},
			{"name": "admins", "action": "allow", "principals": ["admin"], "paths": ["/admin/*"]},
			{"name": "mesh", "action": "allow", "principals": ["spiffe://example.org/ns/web/*"], "paths": ["/api/*"]},
			{"name": "canary", "action": "allow", "principals": ["*"], "headers": {"x-canary": "1"}},
			{"name": "public", "action": "allow", "principals": [""], "paths": ["/public", "/health*"]}
		]}`)
	admin := bearer(sign(t, "HS256", "hs", tokenClaims("sub", "admin")))
	alice := bearer(sign(t, "HS256", "hs", tokenClaims()))
	peer := &filter.TLSInfo{Version: "TLSv1.3", PeerPresented: true, PeerVerified: true,
		PeerURISANs: []string{"spiffe://example.org/ns/web/sa/frontend"}}
	other := &filter.TLSInfo{Version: "TLSv1.3", PeerPresented: true, PeerVerified: true,
		PeerURISANs: []string{"spiffe://example.org/ns/db/sa/x"}}
	for _, tt := range []struct {
		name   string
		r      *wasmtest.Request
		status int
	}{
		{"admin", &wasmtest.Request{Path: "/admin/users", Header: admin}, 200},
		{"admin query", &wasmtest.Request{Path: "/admin/users?all=1", Header: admin}, 200},
		{"not admin", &wasmtest.Request{Path: "/admin/users", Header: alice}, 403},
		{"delete denied first", &wasmtest.Request{Method: "DELETE", Path: "/admin/users", Header: admin}, 403},
		{"mesh peer", &wasmtest.Request{Path: "/api/x", TLS: peer}, 200},
		{"other peer", &wasmtest.Request{Path: "/api/x", TLS: other}, 403},
		{"unverified peer", &wasmtest.Request{Path: "/api/x", TLS: &filter.TLSInfo{Version: "TLSv1.3",
			PeerPresented: true, PeerURISANs: peer.PeerURISANs}}, 403},
		{"header rule", &wasmtest.Request{Path: "/z", Header: append(alice, [2]string{"x-canary", "1"})}, 200},
		{"header rule anonymous", &wasmtest.Request{Path: "/z", Header: [][2]string{{"x-canary", "1"}}}, 403},
		{"public", &wasmtest.Request{Path: "/public"}, 200},
		{"public prefix", &wasmtest.Request{Path: "/healthz"}, 200},
		{"authenticated is not anonymous", &wasmtest.Request{Path: "/public", Header: alice}, 403},
		{"default deny", &wasmtest.Request{Path: "/elsewhere", Header: admin}, 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, h, tt.r)
			if res.Status != tt.status {
				t.Fatalf("status %d, want %d", res.Status, tt.status)
			}
			if tt.status == 403 && (res.Details != "authz_denied" || res.Upstream != nil) {
				t.Errorf("details %q, upstream %v", res.Details, res.Upstream)
			}
		})
	}
}

func TestExtAuthz(t *testing.T) {
	h := plugin(t, `{"jwt":{"jwks":`+hsJWKS()+`},"default":"allow",
		"ext_authz":{"cluster":"ext","path_prefix":"/check","headers":["authorization"]}}`)
	before := extCalls.Load()
	res := do(t, h, &wasmtest.Request{Path: "/a", Header: bearer(sign(t, "HS256", "hs", tokenClaims()))})
	if res.Status != 200 {
		t.Fatalf("alice: %d", res.Status)
	}
	res = do(t, h, &wasmtest.Request{Path: "/a", Header: bearer(sign(t, "HS256", "hs", tokenClaims("sub", "bob")))})
	if res.Status != 403 {
		t.Fatalf("bob: %d", res.Status)
	}
	if n := extCalls.Load() - before; n != 2 {
		t.Errorf("external calls %d", n)
	}
	down := plugin(t, `{"default":"allow","ext_authz":{"cluster":"nowhere"}}`)
	if res := do(t, down, wasmtest.NewRequest("GET /")); res.Status != 403 {
		t.Errorf("unreachable service: %d", res.Status)
	}
}

func TestDryRun(t *testing.T) {
	h := plugin(t, `{"jwt":{"jwks":`+hsJWKS()+`},"dry_run":true,"rules":[{"action":"deny","paths":["/secret"]}]}`)
	before, _ := h.Metric("authz.dry_run_denied")
	for _, r := range []*wasmtest.Request{
		{Path: "/secret", Header: bearer(sign(t, "HS256", "hs", tokenClaims()))},
		{Path: "/open"},
	} {
		res := do(t, h, r)
		if res.Status != 200 || res.Upstream == nil {
			t.Fatalf("%s: %d", r.Path, res.Status)
		}
		if len(res.Logs) != 1 || !strings.Contains(res.Logs[0].Message, "dry run: would") {
			t.Errorf("%s: logs %v", r.Path, res.Logs)
		}
	}
	if v, _ := h.Metric("authz.dry_run_denied"); v-before != 2 {
		t.Errorf("dry run count %v", v-before)
	}
}

func TestDecisionMetrics(t *testing.T) {
	h := plugin(t, `{"jwt":{"jwks":`+hsJWKS()+`},"rules":[{"action":"allow","principals":["alice"]}]}`)
	get := func(n string) float64 { v, _ := h.Metric(n); return v }
	a, d, u := get("authz.allowed"), get("authz.denied"), get("authz.unauthenticated")
	do(t, h, &wasmtest.Request{Header: bearer(sign(t, "HS256", "hs", tokenClaims()))})
	do(t, h, &wasmtest.Request{Header: bearer(sign(t, "HS256", "hs", tokenClaims("sub", "eve")))})
	do(t, h, &wasmtest.Request{})
	if get("authz.allowed")-a != 1 || get("authz.denied")-d != 1 || get("authz.unauthenticated")-u != 1 {
		t.Errorf("allowed %v denied %v unauthenticated %v", get("authz.allowed")-a, get("authz.denied")-d, get("authz.unauthenticated")-u)
	}
}

func TestBadConfig(t *testing.T) {
	plugin(t, `{}`)
	for _, cfg := range []string{
		`{"default":"maybe"}`,
		`{"rules":[{"action":"permit"}]}`,
		`{"jwt":{}}`,
		`{"jwt":{"jwks":{"keys":[]}}}`,
		`{"jwt":{"jwks_cluster":"idp"}}`,
		`{"jwt":{"jwks":` + hsJWKS() + `,"clock_skew":"x"}}`,
		`{"ext_authz":{}}`,
		`{"unknown_field":1}`,
	} {
		if _, err := harness.Configure([]byte(cfg)); err == nil {
			t.Errorf("%s accepted", cfg)
		}
	}
}

func TestGlob(t *testing.T) {
	for _, tt := range []struct {
		p, s string
		ok   bool
	}{
		{"/a", "/a", true}, {"/a", "/ab", false}, {"/a*", "/ab", true}, {"*", "", true}, {"/a/*", "/a", false},
	} {
		if glob(tt.p, tt.s) != tt.ok {
			t.Errorf("glob(%q, %q) != %v", tt.p, tt.s, tt.ok)
		}
	}
}
