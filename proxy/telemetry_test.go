package proxy_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/otlpreceiver"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/telemetry/tracing"
)

// TestTelemetryAcrossRetry sends one request with a W3C trace context
// through the proxy to two upstreams, the first answer of which is 503,
// so that the route's retry policy tries again. The proxy's spans go over
// OTLP gRPC to a real receiver and its access record to a stdout sink:
// the server span continues the client's trace, both attempts are its
// children and carried their own traceparent upstream, and the access
// record names the trace.
func TestTelemetryAcrossRetry(t *testing.T) {
	var calls atomic.Int64
	var mu sync.Mutex
	var seen []string
	up := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("traceparent"))
		mu.Unlock()
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}
	a, b := httptest.NewServer(http.HandlerFunc(up)), httptest.NewServer(http.HandlerFunc(up))
	defer a.Close()
	defer b.Close()

	rcv := otlpreceiver.New()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := rcv.ServeGRPC(l)
	defer g.Stop()
	tr, err := tracing.New(&config.Tracing{OTLP: config.OTLP{Protocol: "grpc", Endpoint: l.Addr().String(), Insecure: true}, SamplingRatio: 1}, "proxy-e2e")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	telCfg := &config.Telemetry{
		Sinks:  []config.TelemetrySink{{Name: "out", Type: "stdout"}},
		Access: []string{"out"}, Flow: []string{"out"},
	}
	pipe, err := telemetry.New(telCfg, telemetry.WithStdout(&out))
	if err != nil {
		t.Fatal(err)
	}
	red := telemetry.NewRED(0)
	reg := prometheus.NewRegistry()
	reg.MustRegister(red.Collectors()...)
	srv := proxy.NewServer(proxy.Options{Telemetry: pipe, Tracer: tr, RED: red})
	cfg := parse(t, `
admin: {address: "off"}
listeners:
  - name: main
    address: 127.0.0.1:0
clusters:
  - name: backend
    endpoints:
      - address: {{a}}
      - address: {{b}}
virtual_hosts:
  - name: web
    domains: ["*"]
    routes:
      - name: all
        cluster: backend
        retry_policy: {retry_on: [5xx], num_retries: 1, back_off: {base_interval: 1ms}}
`, vars{"a": strings.TrimPrefix(a.URL, "http://"), "b": strings.TrimPrefix(b.URL, "http://")})
	cfg.Telemetry = telCfg
	if err := srv.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest("GET", "http://"+srv.Addr("main").String()+"/cart", nil)
	req.Header.Set("traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200 after the retry", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pipe.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	var server *tracepb.Span
	var attempts []*tracepb.Span
	for _, rs := range rcv.Spans() {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				if hex.EncodeToString(s.TraceId) != clientTrace {
					t.Errorf("span %q is in trace %x, not the client's", s.Name, s.TraceId)
				}
				switch s.Kind {
				case tracepb.Span_SPAN_KIND_SERVER:
					server = s
				case tracepb.Span_SPAN_KIND_CLIENT:
					attempts = append(attempts, s)
				}
			}
		}
	}
	if server == nil || len(attempts) != 2 {
		t.Fatalf("got server span %v and %d attempts, want one and two", server, len(attempts))
	}
	if hex.EncodeToString(server.ParentSpanId) != clientSpan || server.Name != "GET all" {
		t.Errorf("server span %q, parent %x", server.Name, server.ParentSpanId)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, at := range attempts {
		if !bytes.Equal(at.ParentSpanId, server.SpanId) {
			t.Errorf("attempt %d is not a child of the server span", i)
		}
		want := "00-" + clientTrace + "-" + hex.EncodeToString(at.SpanId) + "-01"
		if seen[0] != want && seen[1] != want {
			t.Errorf("no upstream saw traceparent %s (saw %v)", want, seen)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ok2xx := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "wasmgate_red_requests_total" {
			continue
		}
		for _, m := range mf.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == "all" && labels["destination"] == "backend" && labels["code_class"] == "2xx" {
				ok2xx += m.GetCounter().GetValue()
			}
		}
	}
	if ok2xx != 1 {
		t.Errorf("RED counted %v 2xx requests of route all to backend, want 1", ok2xx)
	}
	recs := map[string]map[string]any{}
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		recs[r["kind"].(string)] = r
	}
	if f := recs["flow"]; f == nil || f["listener"] != "main" || f["bytes_in"].(float64) == 0 || f["bytes_out"].(float64) == 0 {
		t.Errorf("flow record %v", f)
	}
	rec := recs["access"]
	if rec["kind"] != "access" || rec["status"] != 200.0 || rec["route"] != "all" || rec["cluster"] != "backend" ||
		rec["trace_id"] != clientTrace || rec["path"] != "/cart" {
		t.Errorf("access record %v", rec)
	}
}
