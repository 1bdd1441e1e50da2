package plugins_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
)

// TestRouteChosenAgain checks that a filter that rewrites :path in its
// request headers callback sends the request by the route the new path
// matches, as Envoy does after a filter clears the route cache.
func TestRouteChosenAgain(t *testing.T) {
	wasmFile, _ := filepath.Abs("../proxy/wasm/testdata/features.wasm")
	p := e2e.Start(t, `
listeners:
- name: main
  address: 127.0.0.1:0
clusters:
- name: backend
  endpoints: [{address: "{{backend}}"}]
plugins:
- name: features
  file: {{wasm}}
virtual_hosts:
- name: any
  domains: ["*"]
  filters: [{plugin: features}]
  routes:
  - name: old
    match: {prefix: /old}
    cluster: backend
    request_headers: {set: [{name: x-route, value: old}]}
  - name: new
    match: {prefix: /new}
    cluster: backend
    request_headers: {set: [{name: x-route, value: new}]}
`, map[string]string{"wasm": wasmFile})
	req, _ := http.NewRequest("GET", p.URL+"/old/doc", nil)
	req.Header.Set("x-rewrite", "/new/doc")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	body = bytes.TrimSuffix(body, []byte("-end")) // features marks response bodies
	var echo e2e.Echo
	if resp.StatusCode != 200 || json.Unmarshal(body, &echo) != nil {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if echo.Path != "/new/doc" || echo.Header.Get("x-route") != "new" {
		t.Fatalf("upstream got path %q by route %q, want /new/doc by route new", echo.Path, echo.Header.Get("x-route"))
	}
}
