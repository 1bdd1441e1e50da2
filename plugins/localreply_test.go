package plugins_test

import (
	"bytes"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
)

// TestLocalReplyFromBody checks that a filter's local reply sent from its
// request body callback reaches the client whatever the body's size or
// framing: buffered (small), streamed (over 64 KiB) or chunked.
func TestLocalReplyFromBody(t *testing.T) {
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
  routes:
  - match: {prefix: /}
    cluster: backend
    filters: [{plugin: features}]
`, map[string]string{"wasm": wasmFile})
	for _, tt := range []struct {
		name    string
		size    int
		chunked bool
	}{
		{"60KB", 60 << 10, false},
		{"70KB", 70 << 10, false},
		{"1MB", 1 << 20, false},
		{"chunked", 70 << 10, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader([]byte(strings.Repeat("a", tt.size)))
			if tt.chunked {
				body = io.MultiReader(body) // no length: sent chunked
			}
			req, _ := http.NewRequest("POST", p.URL+"/upload", body)
			req.Header.Set("x-body", "reject")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 403 || !bytes.HasPrefix(got, []byte("rejected by body")) {
				t.Fatalf("%d %q, want the filter's 403", resp.StatusCode, got)
			}
		})
	}
}
