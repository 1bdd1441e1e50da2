package encryption

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
)

// TestThroughProxy runs the plugin in a whole proxy on a cleartext
// listener: the policy refuses what needs TLS, and a header goes
// upstream encrypted and comes back decrypted.
func TestThroughProxy(t *testing.T) {
	wasmFile, _ := filepath.Abs("encryption.wasm")
	p := e2e.Start(t, `
listeners:
- name: main
  address: 127.0.0.1:0
clusters:
- name: backend
  endpoints: [{address: "{{backend}}"}]
plugins:
- name: encryption
  file: {{wasm}}
  config:
    policies:
    - {name: public, path_prefix: /public, require: none}
    default: {require: tls}
    keys: {k1: "`+key1+`"}
    active_key: k1
    encrypt_headers: [x-echo-token]
    decrypt_headers: [x-echo-token]
virtual_hosts:
- name: any
  domains: ["*"]
  routes:
  - match: {prefix: /}
    cluster: backend
    filters: [{plugin: encryption}]
`, map[string]string{"wasm": wasmFile})

	resp, err := http.Get(p.URL + "/private")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), "TLS is required (policy default)") {
		t.Fatalf("cleartext to /private: %d %q", resp.StatusCode, body)
	}

	req, _ := http.NewRequest("GET", p.URL+"/public/x", nil)
	req.Header.Set("x-echo-token", "s3cret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var echo e2e.Echo
	if resp.StatusCode != 200 || json.Unmarshal(body, &echo) != nil {
		t.Fatalf("/public/x: %d %s", resp.StatusCode, body)
	}
	if got := echo.Header.Get("x-echo-token"); !strings.HasPrefix(got, "enc:v1:k1:") {
		t.Errorf("backend received x-echo-token %q", got)
	}
	if got := resp.Header.Get("x-echo-token"); got != "s3cret" {
		t.Errorf("client received x-echo-token %q", got)
	}
	if v := p.Metric("encryption.rejected"); v != 1 {
		t.Errorf("rejected %v", v)
	}
}
