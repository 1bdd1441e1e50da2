package plugins_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
)

// TestRouteChosenAgain checks that a filter that rewrites :path in its
// request headers callback sends the request by the route the new path
// matches, as Envoy does after a filter clears the route cache: the new
// route's cluster gets the request, with the new route's request header
// mutations, and the response gets the new route's response mutations.
// The filters that ran are those of the first route's chain.
func TestRouteChosenAgain(t *testing.T) {
	wasmFile, _ := filepath.Abs("../proxy/wasm/testdata/features.wasm")
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "other "+r.URL.Path+" "+r.Header.Get("x-route"))
	}))
	t.Cleanup(other.Close)
	p := e2e.Start(t, `
listeners:
- name: main
  address: 127.0.0.1:0
clusters:
- name: backend
  endpoints: [{address: "{{backend}}"}]
- name: other
  endpoints: [{address: "{{other}}"}]
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
    response_headers: {set: [{name: x-route-out, value: old}]}
  - name: new
    match: {prefix: /new}
    cluster: other
    request_headers: {set: [{name: x-route, value: new}]}
    response_headers: {set: [{name: x-route-out, value: new}]}
`, map[string]string{"wasm": wasmFile, "other": strings.TrimPrefix(other.URL, "http://")})
	req, _ := http.NewRequest("GET", p.URL+"/old/doc", nil)
	req.Header.Set("x-rewrite", "/new/doc")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	got := strings.TrimSuffix(string(body), "-end") // features marks response bodies
	if resp.StatusCode != 200 || got != "other /new/doc new" {
		t.Fatalf("got %d %q, want 200 \"other /new/doc new\" (the new route's cluster, the new path, the new route's request headers)", resp.StatusCode, got)
	}
	if out := resp.Header.Values("x-route-out"); len(out) != 1 || out[0] != "new" {
		t.Fatalf("response x-route-out %q, want the new route's [new]", out)
	}
}

// TestAuthorityChosenAgain: a filter that appends to :authority, as the
// proxy-wasm Go SDK's http_routing example does ("127.0.0.1:8080" becomes
// "127.0.0.1:8080-canary"), reaches the virtual host of the new
// authority, "*-canary": only a numeric port is stripped before matching.
func TestAuthorityChosenAgain(t *testing.T) {
	wasmFile, _ := filepath.Abs("../proxy/wasm/testdata/features.wasm")
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "canary "+r.Host)
	}))
	t.Cleanup(canary.Close)
	p := e2e.Start(t, `
listeners:
- name: main
  address: 127.0.0.1:0
clusters:
- name: backend
  endpoints: [{address: "{{backend}}"}]
- name: canary
  endpoints: [{address: "{{canary}}"}]
plugins:
- name: features
  file: {{wasm}}
virtual_hosts:
- name: canary
  domains: ["*-canary"]
  filters: [{plugin: features}]
  routes: [{name: canary, match: {prefix: /}, cluster: canary}]
- name: primary
  domains: ["*"]
  filters: [{plugin: features}]
  routes: [{name: primary, match: {prefix: /}, cluster: backend}]
`, map[string]string{"wasm": wasmFile, "canary": strings.TrimPrefix(canary.URL, "http://")})
	authority := strings.TrimPrefix(p.URL, "http://") + "-canary"
	req, _ := http.NewRequest("GET", p.URL+"/", nil)
	req.Header.Set("x-authority", authority)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	got := strings.TrimSuffix(string(body), "-end")
	if want := "canary " + authority; resp.StatusCode != 200 || got != want {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, got, want)
	}
}

// TestNoRouteThroughFilters: a request that matches none of its virtual
// host's routes still passes the virtual host's filters, as Envoy's
// filters run before its router picks a route: one that a filter
// rewrites into a route's path is served by that route, and one that
// still matches nothing is answered 404 route_not_found after the
// filters' response callbacks (features marks responses with
// x-seen-status).
func TestNoRouteThroughFilters(t *testing.T) {
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
  - name: v2
    match: {prefix: /v2/}
    cluster: backend
`, map[string]string{"wasm": wasmFile})
	get := func(path, rewrite string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", p.URL+path, nil)
		if rewrite != "" {
			req.Header.Set("x-rewrite", rewrite)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	resp, body := get("/v1/items", "/v2/items")
	if resp.StatusCode != 200 || !strings.Contains(body, `"path":"/v2/items"`) {
		t.Fatalf("a request rewritten into a route: %d %s", resp.StatusCode, body)
	}
	resp, body = get("/v1/items", "")
	if resp.StatusCode != 404 || !strings.HasPrefix(body, "route_not_found") || resp.Header.Get("x-seen-status") != "404" {
		t.Fatalf("no route: %d %q, x-seen-status %q; want 404 route_not_found seen by the filter",
			resp.StatusCode, body, resp.Header.Get("x-seen-status"))
	}
}
