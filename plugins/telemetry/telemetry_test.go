package telemetry

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/wasm/wasmtest"
)

// collector records the OTLP export requests it receives.
type collector struct {
	mu     sync.Mutex
	bodies [][]byte
	status int
	got    chan struct{}
}

func (c *collector) handle(ctx *fasthttp.RequestCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if string(ctx.Path()) != "/v1/traces" || string(ctx.Request.Header.ContentType()) != "application/json" {
		ctx.SetStatusCode(400)
		return
	}
	c.bodies = append(c.bodies, append([]byte(nil), ctx.PostBody()...))
	if c.status != 0 {
		ctx.SetStatusCode(c.status)
	}
	select {
	case c.got <- struct{}{}:
	default:
	}
}

func (c *collector) wait(t *testing.T) []otlpSpan {
	t.Helper()
	select {
	case <-c.got:
	case <-time.After(5 * time.Second):
		t.Fatal("the collector received nothing")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var spans []otlpSpan
	for _, b := range c.bodies {
		var req otlpRequest
		if err := json.Unmarshal(b, &req); err != nil {
			t.Fatalf("collector got %s: %v", b, err)
		}
		for _, rs := range req.ResourceSpans {
			if len(rs.Resource.Attributes) == 0 || *rs.Resource.Attributes[0].Value.String == "" {
				t.Errorf("no service.name in %s", b)
			}
			for _, ss := range rs.ScopeSpans {
				spans = append(spans, ss.Spans...)
			}
		}
	}
	c.bodies = nil
	return spans
}

var (
	harnessOnce sync.Once
	harness     *wasmtest.Harness
	harnessErr  error
	otel        = &collector{got: make(chan struct{}, 1)}
)

// plugin returns the shipped telemetry.wasm running in the host with cfg.
func plugin(t testing.TB, cfg string) *wasmtest.Harness {
	t.Helper()
	harnessOnce.Do(func() {
		harness, harnessErr = wasmtest.Load("telemetry.wasm", wasmtest.Options{
			Name:     "telemetry",
			Config:   []byte(`{}`),
			Clusters: map[string]fasthttp.RequestHandler{"otel": func(ctx *fasthttp.RequestCtx) { otel.handle(ctx) }},
		})
	})
	if harnessErr != nil {
		t.Fatal(harnessErr)
	}
	h, err := harness.Configure([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func do(t testing.TB, h *wasmtest.Harness, r *wasmtest.Request) *wasmtest.Result {
	t.Helper()
	res, err := h.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestPropagatesTraceparent(t *testing.T) {
	h := plugin(t, `{"trace_id_header":"x-trace-id"}`)
	res := do(t, h, wasmtest.NewRequest("GET /a", "traceparent", incoming, "tracestate", "k=v"))
	up := res.Upstream.Header.Get("traceparent")
	tc, ok := parseTraceparent(up)
	if !ok || tc.TraceID() != "4bf92f3577b34da6a3ce929d0e0e4736" || tc.flags != 1 {
		t.Fatalf("upstream traceparent %q", up)
	}
	if strings.Contains(up, "00f067aa0ba902b7") {
		t.Errorf("upstream traceparent %q keeps the caller's span id", up)
	}
	if got := res.Upstream.Header.Get("tracestate"); got != "k=v" {
		t.Errorf("tracestate %q", got)
	}
	if got := res.FilterState["wasm.trace_id"]; got != tc.TraceID() {
		t.Errorf("filter state trace id %q", got)
	}
	if got := res.Header.Get("x-trace-id"); got != tc.TraceID() {
		t.Errorf("x-trace-id %q", got)
	}
}

func TestStartsTraces(t *testing.T) {
	for _, tt := range []struct {
		cfg   string
		flags byte
	}{
		{`{"sample_rate":1}`, 1},
		{`{"sample_rate":0}`, 0},
	} {
		h := plugin(t, tt.cfg)
		for _, parent := range []string{"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
			r := wasmtest.NewRequest("GET /b")
			if parent != "" {
				r.Header = append(r.Header, [2]string{"traceparent", parent})
			}
			res := do(t, h, r)
			tc, ok := parseTraceparent(res.Upstream.Header.Get("traceparent"))
			if !ok || tc.flags != tt.flags || res.FilterState["wasm.trace_id"] != tc.TraceID() {
				t.Errorf("%s, parent %q: upstream traceparent %q", tt.cfg, parent, res.Upstream.Header.Get("traceparent"))
			}
		}
	}
}

func TestMetrics(t *testing.T) {
	h := plugin(t, `{"metric_prefix":"m1"}`)
	for range 3 {
		do(t, h, &wasmtest.Request{Method: "POST", Path: "/c", Route: "users", Cluster: "api"})
	}
	if v, _ := h.Metric("m1.requests;route=users;cluster=api;method=POST;status=200"); v != 3 {
		all, _ := h.Metrics()
		t.Errorf("request count %v; metrics %v", v, all)
	}
	if v, _ := h.Metric("m1.request_duration_ms;route=users;cluster=api"); v != 3 {
		t.Errorf("latency samples %v", v)
	}
}

func TestExportsSpans(t *testing.T) {
	h := plugin(t, `{"sample_rate":1,"metric_prefix":"m2","service_name":"edge",
		"collector":{"cluster":"otel","flush_interval":"50ms"}}`)
	res := do(t, h, &wasmtest.Request{Method: "GET", Path: "/d?q=1", Route: "users", Cluster: "api",
		Header: [][2]string{{"traceparent", incoming}}})
	do(t, h, wasmtest.NewRequest("GET /e"))
	tc, _ := parseTraceparent(res.Upstream.Header.Get("traceparent"))
	var spans []otlpSpan
	deadline := time.Now().Add(5 * time.Second)
	for len(spans) < 2 && time.Now().Before(deadline) {
		spans = append(spans, otel.wait(t)...)
	}
	if len(spans) != 2 {
		t.Fatalf("spans %+v", spans)
	}
	s := spans[0]
	if s.TraceID != tc.TraceID() || s.SpanID != hexOf(tc.span[:]) || s.ParentSpanID != "00f067aa0ba902b7" ||
		s.Kind != spanKindServer || s.Name != "GET users" {
		t.Errorf("span %+v", s)
	}
	attrs := map[string]string{}
	for _, kv := range s.Attributes {
		if kv.Value.String != nil {
			attrs[kv.Key] = *kv.Value.String
		} else {
			attrs[kv.Key] = *kv.Value.Int
		}
	}
	if attrs["url.path"] != "/d?q=1" || attrs["http.response.status_code"] != "200" || attrs["wasmgate.cluster"] != "api" {
		t.Errorf("attributes %v", attrs)
	}
	if spans[1].ParentSpanID != "" {
		t.Errorf("a new trace has parent %q", spans[1].ParentSpanID)
	}
	waitMetric(t, h, "m2.spans.exported", 2)
}

func TestExportOnFullBatch(t *testing.T) {
	h := plugin(t, `{"sample_rate":1,"metric_prefix":"m3","collector":{"cluster":"otel","flush_interval":"1h","max_batch":2}}`)
	do(t, h, wasmtest.NewRequest("GET /f"))
	do(t, h, wasmtest.NewRequest("GET /g"))
	if spans := otel.wait(t); len(spans) != 2 {
		t.Fatalf("spans %d", len(spans))
	}
	waitMetric(t, h, "m3.spans.exported", 2)
}

func TestExportFailure(t *testing.T) {
	otel.mu.Lock()
	otel.status = 503
	otel.mu.Unlock()
	defer func() { otel.mu.Lock(); otel.status = 0; otel.mu.Unlock() }()
	h := plugin(t, `{"sample_rate":1,"metric_prefix":"m4","collector":{"cluster":"otel","flush_interval":"1h","max_batch":1}}`)
	do(t, h, wasmtest.NewRequest("GET /h"))
	otel.wait(t)
	waitMetric(t, h, "m4.spans.export_failed", 1)
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []string{`{"sample_rate":2}`, `{"collector":{"cluster":"otel","flush_interval":"soon"}}`, `[`} {
		if _, err := harnessFor(t).Configure([]byte(cfg)); err == nil {
			t.Errorf("%s accepted", cfg)
		}
	}
}

func harnessFor(t *testing.T) *wasmtest.Harness {
	plugin(t, `{}`)
	return harness
}

func waitMetric(t *testing.T, h *wasmtest.Harness, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, _ := h.Metric(name)
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, v, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestParseTraceparent(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{incoming, true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false},
		{"", false},
	} {
		tc, ok := parseTraceparent(tt.in)
		if ok != tt.ok {
			t.Errorf("%q: ok = %v", tt.in, ok)
		}
		if ok && tt.in[:2] == "00" && tc.String() != tt.in {
			t.Errorf("%q round-trips to %q", tt.in, tc.String())
		}
	}
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add(incoming)
	f.Fuzz(func(t *testing.T, s string) {
		tc, ok := parseTraceparent(s)
		if ok {
			if again, ok2 := parseTraceparent(tc.String()); !ok2 || again != tc {
				t.Fatalf("%q -> %q does not parse back", s, tc.String())
			}
		}
	})
}
