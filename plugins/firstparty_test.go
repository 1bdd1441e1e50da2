package plugins_test

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
)

// TestFirstPartyOneVM runs the three first-party filters from
// firstparty.wasm as three plugins sharing one vm_id, chained on one
// route: each does what its own module does, in one VM (one instance
// serves the three), with its metrics under its own plugin name.
func TestFirstPartyOneVM(t *testing.T) {
	wasmFile, _ := filepath.Abs("firstparty/firstparty.wasm")
	p := e2e.Start(t, `
listeners:
- name: main
  address: 127.0.0.1:0
clusters:
- name: backend
  endpoints: [{address: "{{backend}}"}]
plugins:
- name: authz
  file: {{wasm}}
  vm_id: firstparty
  root_id: authz
  config:
    rules:
    - {action: deny, paths: ["/admin*"]}
    - {action: allow, paths: ["/*"]}
- name: encryption
  file: {{wasm}}
  vm_id: firstparty
  root_id: encryption
  config:
    default: {require: none}
    keys: {k1: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
    active_key: k1
    encrypt_headers: [x-echo-token]
    decrypt_headers: [x-echo-token]
- name: telemetry
  file: {{wasm}}
  vm_id: firstparty
  root_id: telemetry
  config:
    sample_rate: 1
    trace_id_header: x-trace-id
virtual_hosts:
- name: any
  domains: ["*"]
  routes:
  - name: api
    match: {prefix: /}
    cluster: backend
    filters: [{plugin: authz}, {plugin: encryption}, {plugin: telemetry}]
`, map[string]string{"wasm": wasmFile})

	req, _ := http.NewRequest("GET", p.URL+"/orders/1", nil)
	req.Header.Set("x-echo-token", "s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var echo e2e.Echo
	if resp.StatusCode != 200 || json.Unmarshal(body, &echo) != nil {
		t.Fatalf("/orders/1: %d %s", resp.StatusCode, body)
	}
	if got := echo.Header.Get("x-echo-token"); !strings.HasPrefix(got, "enc:v1:k1:") {
		t.Errorf("encryption: backend received x-echo-token %q", got)
	}
	if got := resp.Header.Get("x-echo-token"); got != "s3cret" {
		t.Errorf("encryption: client received x-echo-token %q", got)
	}
	if echo.Header.Get("traceparent") == "" || resp.Header.Get("x-trace-id") == "" {
		t.Errorf("telemetry: traceparent %q upstream, x-trace-id %q", echo.Header.Get("traceparent"), resp.Header.Get("x-trace-id"))
	}
	resp, err = http.Get(p.URL + "/admin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("authz: /admin answered %d", resp.StatusCode)
	}

	// Metrics carry the plugin that defined them; the VM's its vm_id.
	want := map[string]string{
		`wasm_authz_allowed{plugin="authz"}`:                     "1",
		`wasm_authz_denied{plugin="authz"}`:                      "1",
		`wasm_encryption_headers_encrypted{plugin="encryption"}`: "1",
		`wasmgate_wasm_instances{plugin="firstparty"}`:           "1",
	}
	got := gathered(t, p)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %s", k, got[k], v)
		}
	}
	if v := p.Metric("http.requests;route=api;cluster=backend;method=GET;status=200"); v != 1 {
		t.Errorf("telemetry: request count %v", v)
	}
	for k := range got {
		if strings.Contains(k, `plugin="firstparty"`) && strings.HasPrefix(k, "wasm_") && !strings.HasPrefix(k, "wasmgate_") {
			t.Errorf("guest metric %s is labelled with the VM, not its plugin", k)
		}
	}
}

// gathered returns every counter and gauge of the proxy's registry as
// name{label="value",...} -> value.
func gathered(t *testing.T, p *e2e.Proxy) map[string]string {
	t.Helper()
	fams, err := p.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = strconv.FormatFloat(v, 'g', -1, 64)
		}
	}
	return out
}
