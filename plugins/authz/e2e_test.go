package authz

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
)

// TestThroughProxy runs the plugin in a whole proxy with keys fetched
// from an issuer through a cluster.
func TestThroughProxy(t *testing.T) {
	testKeys(t)
	issuer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, asymJWKS("r1", "e1"))
	}))
	defer issuer.Close()
	wasmFile, _ := filepath.Abs("authz.wasm")
	p := e2e.Start(t, `
listeners:
- name: main
  address: 127.0.0.1:0
clusters:
- name: backend
  endpoints: [{address: "{{backend}}"}]
- name: idp
  endpoints: [{address: "{{idp}}"}]
plugins:
- name: authz
  file: {{wasm}}
  allowed_clusters: [idp]
  config:
    jwt: {jwks_cluster: idp, jwks_path: /jwks.json, audiences: [api]}
    principal_header: x-principal
    rules:
    - {action: allow, principals: [alice], paths: ["/orders*"]}
virtual_hosts:
- name: any
  domains: ["*"]
  routes:
  - match: {prefix: /}
    cluster: backend
    filters: [{plugin: authz}]
`, map[string]string{"idp": strings.TrimPrefix(issuer.URL, "http://"), "wasm": wasmFile})

	get := func(path, token string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", p.URL+path, nil)
		if token != "" {
			req.Header.Set("authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := get("/orders/1", sign(t, "ES256", "e1", tokenClaims()))
	var echo e2e.Echo
	if resp.StatusCode != 200 || json.Unmarshal(body, &echo) != nil || echo.Header.Get("x-principal") != "alice" {
		t.Fatalf("alice: %d %s", resp.StatusCode, body)
	}
	if resp, _ := get("/orders/1", sign(t, "RS256", "r1", tokenClaims("sub", "bob"))); resp.StatusCode != 403 {
		t.Errorf("bob: %d", resp.StatusCode)
	}
	resp, _ = get("/orders/1", "")
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("www-authenticate"), "Bearer") {
		t.Errorf("anonymous: %d %q", resp.StatusCode, resp.Header.Get("www-authenticate"))
	}
	if v := p.Metric("authz.allowed"); v != 1 {
		t.Errorf("allowed %v", v)
	}
}
