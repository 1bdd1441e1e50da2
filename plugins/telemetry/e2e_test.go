package telemetry

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
)

// TestThroughProxy runs the plugin in a whole proxy: traceparent reaches
// the backend, the span reaches the collector, metrics count the request.
func TestThroughProxy(t *testing.T) {
	got := make(chan otlpRequest, 4)
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req otlpRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err == nil && r.URL.Path == "/v1/traces" {
			got <- req
		}
	}))
	defer col.Close()
	wasmFile, _ := filepath.Abs("telemetry.wasm")
	p := e2e.Start(t, `
listeners:
- name: main
  address: 127.0.0.1:0
clusters:
- name: backend
  endpoints: [{address: "{{backend}}"}]
- name: otel
  endpoints: [{address: "{{otel}}"}]
plugins:
- name: telemetry
  file: {{wasm}}
  pool_size: 2
  allowed_clusters: [otel]
  config:
    sample_rate: 1
    trace_id_header: x-trace-id
    collector: {cluster: otel, flush_interval: 50ms}
virtual_hosts:
- name: any
  domains: ["*"]
  routes:
  - name: api
    match: {prefix: /}
    cluster: backend
    filters: [{plugin: telemetry}]
`, map[string]string{"otel": strings.TrimPrefix(col.URL, "http://"), "wasm": wasmFile})

	req, _ := http.NewRequest("GET", p.URL+"/orders?id=7", nil)
	req.Header.Set("traceparent", incoming)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var echo e2e.Echo
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(body, &echo); err != nil {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	tc, ok := parseTraceparent(echo.Header.Get("traceparent"))
	if !ok || tc.TraceID() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("backend got traceparent %q", echo.Header.Get("traceparent"))
	}
	if resp.Header.Get("x-trace-id") != tc.TraceID() {
		t.Errorf("x-trace-id %q", resp.Header.Get("x-trace-id"))
	}
	select {
	case r := <-got:
		s := r.ResourceSpans[0].ScopeSpans[0].Spans[0]
		if s.TraceID != tc.TraceID() || s.ParentSpanID != "00f067aa0ba902b7" || s.Name != "GET api" {
			t.Errorf("span %+v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no span reached the collector")
	}
	if v := p.Metric("http.requests;route=api;cluster=backend;method=GET;status=200"); v != 1 {
		t.Errorf("request count %v", v)
	}
	if v := p.Metric("http.request_duration_ms;route=api;cluster=backend"); v != 1 {
		t.Errorf("latency samples %v", v)
	}
}
