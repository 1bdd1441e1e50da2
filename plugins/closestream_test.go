package plugins_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
)

// TestCloseStream: a filter that closes its request (proxy_close_stream,
// as the Rust SDK's reset_http_request and this SDK's Request.Close do)
// gets no answer sent, as Envoy resets the stream: over HTTP/1.1 the
// connection closes with nothing written, over HTTP/2 the stream is
// reset. Requests the filter lets through are served on the same
// listener.
func TestCloseStream(t *testing.T) {
	wasmFile, _ := filepath.Abs("../proxy/wasm/testdata/actions.wasm")
	p := e2e.Start(t, `
listeners:
- name: main
  address: 127.0.0.1:0
  http2: {h2c: true}
clusters:
- name: backend
  endpoints: [{address: "{{backend}}"}]
plugins:
- name: actions
  file: {{wasm}}
virtual_hosts:
- name: any
  domains: ["*"]
  filters: [{plugin: actions}]
  routes: [{name: all, match: {prefix: /}, cluster: backend}]
`, map[string]string{"wasm": wasmFile})
	h1 := &http.Client{Transport: &http.Transport{}}
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: &http.Transport{Protocols: &h2c}}
	for name, c := range map[string]*http.Client{"HTTP/1.1": h1, "HTTP/2": h2} {
		// "/" is let through (the module returns 0 for it).
		resp, err := c.Get(p.URL + "/")
		if err != nil {
			t.Fatalf("%s: a request the filter lets through: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", name, resp.StatusCode)
		}
		resp, err = c.Get(p.URL + "/closeabcd")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s: a closed request was answered %d", name, resp.StatusCode)
		}
		want := "EOF"
		if name == "HTTP/2" {
			want = "NO_ERROR"
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %s", name, err, want)
		}
		// The listener goes on serving.
		resp, err = c.Get(p.URL + "/")
		if err != nil {
			t.Fatalf("%s: after a closed request: %v", name, err)
		}
		resp.Body.Close()
	}
}
