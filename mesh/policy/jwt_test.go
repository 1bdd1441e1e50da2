package policy_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/wasmgate/wasmgate/mesh/policy"
)

// issuer signs tokens with its own key, named kid in its key set.
type issuer struct {
	iss string
	key crypto.Signer
	kid string
	alg jose.SignatureAlgorithm
}

func newIssuer(t testing.TB, iss, kid string, rsaKey bool) *issuer {
	t.Helper()
	if rsaKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return &issuer{iss: iss, key: k, kid: kid, alg: jose.RS256}
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{iss: iss, key: k, kid: kid, alg: jose.ES256}
}

// jwks is the issuers' public keys as a key set.
func jwks(t testing.TB, issuers ...*issuer) string {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, is := range issuers {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: is.key.Public(), KeyID: is.kid, Algorithm: string(is.alg), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// token signs claims; sub, iss, exp (an hour on) are filled in unless
// given.
func (is *issuer) token(t testing.TB, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if is.kid != "" {
		opts = opts.WithHeader("kid", is.kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: is.alg, Key: is.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]any{"iss": is.iss, "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(all, k)
			continue
		}
		all[k] = v
	}
	tok, err := jwt.Signed(s).Claims(all).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// carrier is a request's headers and query for the authenticator.
type carrier struct {
	h http.Header
	q url.Values
}

func (c carrier) Get(name string) (string, bool) {
	v, ok := c.h[http.CanonicalHeaderKey(name)]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}

func (c carrier) Param(name string) (string, bool) {
	v, ok := c.q[name]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}

func (c carrier) Cookie(name string) (string, bool) {
	return policy.CookieValue(c.h.Get("Cookie"), name)
}

func bearer(tok string) carrier {
	return carrier{h: http.Header{"Authorization": {"Bearer " + tok}}}
}

// TestRequestAuthentication: a token of a configured issuer, signed by a
// key of its set, in date and for an accepted audience, is the request's
// end user; a request without one has none; any other token is refused
// with the reason, as Istio's RequestAuthentication does.
func TestRequestAuthentication(t *testing.T) {
	idp := newIssuer(t, "https://idp.example", "k1", false)
	legacy := newIssuer(t, "https://legacy.example", "", true)
	stranger := newIssuer(t, "https://idp.example", "k1", false) // the same kid, another key
	session := newIssuer(t, "https://session.example", "s1", false)
	g := policy.NewGuard("shop", "orders")
	if g.Authenticator() != nil {
		t.Fatal("a guard authenticates before any request authentication")
	}
	if _, err := g.Authenticator().Authenticate(bearer(idp.token(t, nil))); !errors.Is(err, policy.ErrNoToken) {
		t.Fatalf("without a request authentication a token is the app's business: %v", err)
	}
	err := g.LoadRequestAuthentications([]policy.RequestAuthentication{
		{Name: "idp", Namespace: "shop", JWTRules: []policy.JWTRule{{Issuer: idp.iss, Audiences: []string{"orders", "shop"}, JWKS: jwks(t, idp)}}},
		{Name: "legacy", Namespace: "shop", Service: "orders", JWTRules: []policy.JWTRule{{Issuer: legacy.iss, JWKS: jwks(t, legacy),
			FromHeaders: []policy.JWTHeader{{Name: "X-Legacy-Token"}}, FromParams: []string{"token"}, ForwardOriginalToken: true,
			OutputClaimToHeaders: []policy.ClaimToHeader{{Header: "X-User", Claim: "sub"}, {Header: "x-groups", Claim: "groups"}}}}},
		{Name: "session", Namespace: "shop", JWTRules: []policy.JWTRule{{Issuer: session.iss, JWKS: jwks(t, session),
			FromCookies: []string{"session", "sid"}, OutputPayloadToHeader: "X-JWT-Payload"}}},
		{Name: "elsewhere", Namespace: "shop", Service: "payments", JWTRules: []policy.JWTRule{{Issuer: "https://payments.example", JWKS: jwks(t, legacy)}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := g.Authenticator().Authenticate(bearer(idp.token(t, map[string]any{"aud": []string{"orders"}, "azp": "web-app",
		"groups": []string{"buyers", "admins"}, "org": map[string]any{"tier": "gold"}})))
	if err != nil {
		t.Fatal(err)
	}
	if a.Auth.Principal != "https://idp.example/alice" || a.Auth.Presenter != "web-app" || len(a.Auth.Audiences) != 1 || a.Header != "authorization" {
		t.Fatalf("authenticated %+v", a)
	}
	// What the token says is what authorization policies match.
	set := mustCompile(t, `authorization_policies:
- name: admins
  namespace: shop
  rules:
  - from: [{request_principals: ["https://idp.example/*"]}]
    when:
    - {key: "request.auth.claims[groups]", values: [admins]}
    - {key: "request.auth.claims[org][tier]", values: [gold]}
    - {key: request.auth.audiences, values: [orders]}
    - {key: request.auth.presenter, values: [web-*]}
    - {key: request.auth.principal, not_values: ["*/mallory"]}
`).For("shop", "orders")
	if d := set.Evaluate(&policy.Request{Method: "GET", Path: "/", Auth: &a.Auth}); !d.Allowed || d.Reason != policy.AllowMatched {
		t.Fatalf("the admin's request: %s", d)
	}
	if d := set.Evaluate(&policy.Request{Method: "GET", Path: "/"}); d.Allowed {
		t.Fatalf("a request without a token: %s", d)
	}
	b, err := g.Authenticator().Authenticate(bearer(idp.token(t, map[string]any{"aud": "shop", "groups": "buyers"})))
	if err != nil {
		t.Fatal(err)
	}
	if d := set.Evaluate(&policy.Request{Method: "GET", Path: "/", Auth: &b.Auth}); d.Allowed {
		t.Fatalf("a buyer's request: %s", d)
	}
	// A connection has no token: a rule of request principals never
	// admits one.
	if d := set.Evaluate(&policy.Request{Connection: true, Auth: &a.Auth}); d.Allowed {
		t.Fatalf("a connection: %s", d)
	}

	// The legacy issuer's token, in its own header, without a kid (every
	// key of its set is tried), kept for the app; or in the query.
	l, err := g.Authenticator().Authenticate(carrier{h: http.Header{"X-Legacy-Token": {legacy.token(t, map[string]any{"sub": "bob"})}}})
	if err != nil || l.Auth.Principal != "https://legacy.example/bob" || l.Header != "" || len(l.Claims) != 1 || l.Claims[0] != [2]string{"x-user", "bob"} {
		t.Fatalf("legacy header: %+v %v", l, err)
	}
	if h := g.Authenticator().OutputHeaders(); len(h) != 3 || h[0] != "x-user" || h[1] != "x-groups" || h[2] != "x-jwt-payload" {
		t.Fatalf("claim headers %q", h)
	}
	if l, err := g.Authenticator().Authenticate(carrier{q: url.Values{"token": {legacy.token(t, nil)}}}); err != nil || l.Auth.Principal != "https://legacy.example/alice" {
		t.Fatalf("legacy query: %+v %v", l, err)
	}
	if l, err := g.Authenticator().Authenticate(carrier{q: url.Values{"access_token": {idp.token(t, map[string]any{"aud": "shop"})}}}); err != nil || l.Header != "" {
		t.Fatalf("the default query parameter: %+v %v", l, err)
	}

	// A token in a cookie, among others or quoted, stays there; its
	// payload goes to the app as it is in the token.
	for _, cookie := range []string{"theme=dark; session=%s; other=1", `sid="%s"`} {
		tok := session.token(t, map[string]any{"sub": "carol", "roles": []string{"ops"}})
		s, err := g.Authenticator().Authenticate(carrier{h: http.Header{"Cookie": {fmt.Sprintf(cookie, tok)}}})
		if err != nil || s.Auth.Principal != "https://session.example/carol" || s.Header != "" || len(s.Claims) != 1 || s.Claims[0][0] != "x-jwt-payload" {
			t.Fatalf("cookie %q: %+v %v", cookie, s, err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(s.Claims[0][1])
		var payload map[string]any
		if err != nil || json.Unmarshal(raw, &payload) != nil || payload["sub"] != "carol" || payload["iss"] != session.iss {
			t.Fatalf("payload header %q: %s %v", s.Claims[0][1], raw, err)
		}
	}
	if _, err := g.Authenticator().Authenticate(carrier{h: http.Header{"Cookie": {"sessions=x; xsession=y"}}}); !errors.Is(err, policy.ErrNoToken) {
		t.Fatalf("cookies of other names: %v", err)
	}
	if _, err := g.Authenticator().Authenticate(carrier{h: http.Header{"Other": {"x"}}}); !errors.Is(err, policy.ErrNoToken) {
		t.Fatalf("no token: %v", err)
	}
	for name, c := range map[string]struct {
		carrier
		want string
	}{
		"expired":         {bearer(idp.token(t, map[string]any{"aud": "orders", "exp": time.Now().Add(-2 * time.Minute).Unix()})), "jwt is expired"},
		"not yet valid":   {bearer(idp.token(t, map[string]any{"aud": "orders", "nbf": time.Now().Add(5 * time.Minute).Unix()})), "jwt is not yet valid"},
		"audience":        {bearer(idp.token(t, map[string]any{"aud": "payments"})), "audiences in jwt are not allowed"},
		"no audience":     {bearer(idp.token(t, nil)), "audiences in jwt are not allowed"},
		"unknown issuer":  {bearer(newIssuer(t, "https://evil.example", "k1", false).token(t, nil)), `jwt issuer "https://evil.example" is not configured`},
		"another service": {bearer(newIssuer(t, "https://payments.example", "", true).token(t, nil)), "is not configured"},
		"forged":          {bearer(stranger.token(t, map[string]any{"aud": "orders"})), "jwt verification fails"},
		"unknown kid":     {bearer((&issuer{iss: idp.iss, key: idp.key, kid: "k9", alg: idp.alg}).token(t, map[string]any{"aud": "orders"})), `kid "k9"`},
		"not a jwt":       {bearer("abc.def"), "jwt is not in the form"},
		"symmetric":       {bearer(hs256(t, idp.iss)), "jwt is not in the form"},
	} {
		if _, err := g.Authenticator().Authenticate(c.carrier); err == nil || errors.Is(err, policy.ErrNoToken) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func hs256(t testing.TB, iss string) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(map[string]any{"iss": iss, "sub": "x"}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestRemoteKeySet: a jwks_uri is fetched once for every rule and reload
// that names it; until it is, tokens of its issuer are refused with the
// reason; a token of a key the set lacks (the issuer rotated its keys)
// has the set fetched again.
func TestRemoteKeySet(t *testing.T) {
	old := newIssuer(t, "https://idp.example", "2026-01", false)
	rotated := newIssuer(t, "https://idp.example", "2026-12", false)
	var mu sync.Mutex
	served, fetches := jwks(t, old), 0
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		mu.Lock()
		defer mu.Unlock()
		fetches++
		w.Write([]byte(served))
	}))
	defer srv.Close()
	g := policy.NewGuard("shop", "orders")
	ra := []policy.RequestAuthentication{{Name: "idp", Namespace: "shop", JWTRules: []policy.JWTRule{{Issuer: old.iss, JWKSURI: srv.URL + "/jwks"}}}}
	if err := g.LoadRequestAuthentications(ra); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Authenticator().Authenticate(bearer(old.token(t, nil))); err == nil || !strings.Contains(err.Error(), "not fetched yet") {
		t.Fatalf("before the key set is fetched: %v", err)
	}
	close(release)
	eventually(t, func() error { _, err := g.Authenticator().Authenticate(bearer(old.token(t, nil))); return err })
	if err := g.LoadRequestAuthentications(ra); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Authenticator().Authenticate(bearer(old.token(t, nil))); err != nil {
		t.Fatalf("after a reload: %v", err)
	}
	mu.Lock()
	served = jwks(t, rotated)
	mu.Unlock()
	eventually(t, func() error { _, err := g.Authenticator().Authenticate(bearer(rotated.token(t, nil))); return err })
	mu.Lock()
	defer mu.Unlock()
	if fetches != 2 {
		t.Fatalf("%d fetches, want 2: the first, and one for the new kid", fetches)
	}
}

// eventually retries f for up to 20 s (a refetch is spaced by 5 s).
func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
