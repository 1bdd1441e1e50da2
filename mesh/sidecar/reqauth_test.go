package sidecar_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// TestSidecarRequestAuthentication: end users' tokens through the mesh,
// as Istio's RequestAuthentication with an AuthorizationPolicy of
// requestPrincipals. orders' sidecar fetches the identity provider's key
// set from its jwks_uri and verifies the bearer token of each call from
// web: a call without a token has no end user and the policy refuses it
// (403); a forged, expired or foreign token is refused before the policy
// (401, with a challenge); a good one reaches the app without its
// Authorization header, with its subject in a header no client can set,
// and a claim decides the admin path.
func TestSidecarRequestAuthentication(t *testing.T) {
	m := startProcessMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(set) }))
	defer idp.Close()
	const iss = "https://idp.example"
	token := func(signer *ecdsa.PrivateKey, claims map[string]any) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: signer}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
		if err != nil {
			t.Fatal(err)
		}
		all := map[string]any{"iss": iss, "sub": "alice", "aud": "orders", "exp": time.Now().Add(time.Hour).Unix()}
		for k, v := range claims {
			all[k] = v
		}
		tok, err := jwt.Signed(s).Claims(all).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	m.start(t, "orders", appPort(t, func(w http.ResponseWriter, r *http.Request) {
		// The verified token's payload, as the sidecar hands it on.
		var payload struct{ Sub string }
		raw, _ := base64.RawURLEncoding.DecodeString(r.Header.Get("X-JWT-Payload"))
		_ = json.Unmarshal(raw, &payload)
		fmt.Fprintf(w, "orders %s authorization=%q user=%q payload_sub=%q cookie=%q", r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("X-User"),
			payload.Sub, r.Header.Get("Cookie"))
	}), testaddr.Free(t))
	webOut := testaddr.Free(t)
	m.start(t, "web", port(t, testaddr.Free(t)), webOut, "--calls", "orders")

	put := func(kind resource.Kind, name, doc string) {
		t.Helper()
		if _, err := m.admin.Put(ctx, resource.Ref{Kind: kind, Name: name}, []byte(doc), api.Options{}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	put(resource.RequestAuthentications, "orders-jwt", `{"name": "orders-jwt", "namespace": "default", "service": "orders",
		"jwt_rules": [{"issuer": "`+iss+`", "jwks_uri": "`+idp.URL+`/jwks", "audiences": ["orders"],
		"from_headers": [{"name": "Authorization", "prefix": "Bearer "}], "from_cookies": ["session"],
		"output_claim_to_headers": [{"header": "x-user", "claim": "sub"}], "output_payload_to_header": "x-jwt-payload"}]}`)
	put(resource.AuthorizationPolicies, "orders-users", `{"name": "orders-users", "namespace": "default", "service": "orders", "rules": [
		{"from": [{"request_principals": ["`+iss+`/*"]}], "to": [{"not_paths": ["/admin/*"]}]},
		{"from": [{"request_principals": ["`+iss+`/*"]}], "to": [{"paths": ["/admin/*"]}], "when": [{"key": "request.auth.claims[groups]", "values": ["admins"]}]}]}`)

	client := &http.Client{Timeout: 5 * time.Second}
	call := func(path, tok string, cookie ...string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+webOut+path, nil)
		req.Host = "orders"
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if len(cookie) > 0 {
			req.Header.Set("Cookie", cookie[0])
		}
		// A client's own value of a claim's or the payload's header never
		// reaches the app.
		req.Header.Set("X-User", "mallory")
		req.Header.Set("X-JWT-Payload", "eyJzdWIiOiJtYWxsb3J5In0")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error(), nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	good := token(key, map[string]any{"groups": []string{"buyers"}})
	// The policies reach orders' sidecar, and it fetches the key set, on
	// their own time.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, body, _ := call("/orders", good)
		if st == 200 && body == `orders /orders authorization="" user="alice" payload_sub="alice" cookie=""` {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a call with a good token: %d %q\n%s", st, body, m.sidecars.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, body, _ := call("/orders", ""); st != 403 {
		t.Fatalf("a call without a token: %d %q", st, body)
	}
	for name, tok := range map[string]string{
		"forged":   token(forger, nil),
		"expired":  token(key, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}),
		"audience": token(key, map[string]any{"aud": "payments"}),
		"issuer":   token(key, map[string]any{"iss": "https://evil.example"}),
	} {
		st, body, h := call("/orders", tok)
		if st != 401 || h.Get("WWW-Authenticate") != `Bearer realm="https://orders/orders", error="invalid_token"` {
			t.Errorf("a call with a token (%s): %d %q %v", name, st, body, h)
		}
	}
	if st, body, _ := call("/admin/refund", good); st != 403 {
		t.Fatalf("a buyer on the admin path: %d %q", st, body)
	}
	if st, body, _ := call("/admin/refund", token(key, map[string]any{"groups": []string{"buyers", "admins"}})); st != 200 || body != `orders /admin/refund authorization="" user="alice" payload_sub="alice" cookie=""` {
		t.Fatalf("an admin on the admin path: %d %q", st, body)
	}
	// A token in a cookie: verified, and the cookie left as it came.
	cookie := "theme=dark; session=" + token(key, map[string]any{"sub": "carol"})
	if st, body, _ := call("/orders", "", cookie); st != 200 || body != `orders /orders authorization="" user="carol" payload_sub="carol" cookie="`+cookie+`"` {
		t.Fatalf("a token in a cookie: %d %q", st, body)
	}
	if st, body, _ := call("/orders", "", "session="+token(forger, nil)); st != 401 {
		t.Fatalf("a forged token in a cookie: %d %q", st, body)
	}
}
