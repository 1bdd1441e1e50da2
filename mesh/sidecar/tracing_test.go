package sidecar_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/wasmgate/wasmgate/internal/otlpreceiver"
	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// span is what the test reads of one exported span.
type span struct {
	service, namespace string
	kind               tracepb.Span_SpanKind
	trace, id, parent  string
	attrs              map[string]string
}

func spansOf(r *otlpreceiver.Receiver) []span {
	str := func(kvs []*commonpb.KeyValue) map[string]string {
		m := map[string]string{}
		for _, kv := range kvs {
			m[kv.Key] = kv.Value.GetStringValue()
		}
		return m
	}
	var out []span
	for _, rs := range r.Spans() {
		res := str(rs.Resource.GetAttributes())
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				out = append(out, span{service: res["service.name"], namespace: res["service.namespace"], kind: s.Kind,
					trace: hex.EncodeToString(s.TraceId), id: hex.EncodeToString(s.SpanId), parent: hex.EncodeToString(s.ParentSpanId),
					attrs: str(s.Attributes)})
			}
		}
	}
	return out
}

// TestSidecarTracing: a call through two sidecars is one trace, each hop
// named after its service. web's and orders' sidecars, processes with
// tracing in their --local-config (no service name set), export their
// spans to an OTLP receiver: web's server span for the app's call and its
// client span to orders, orders' server span (a child of web's client
// span, with web's verified SPIFFE ID) and its client span to the app,
// whose traceparent names that last span. orders' decision record of the
// call carries the trace's id.
func TestSidecarTracing(t *testing.T) {
	m := startProcessMesh(t)
	recv := otlpreceiver.New()
	ol, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := recv.ServeGRPC(ol)
	t.Cleanup(gs.Stop)
	decisions := filepath.Join(m.dir, "decisions.log")
	tracing := "telemetry:\n  tracing: {otlp: {protocol: grpc, endpoint: " + ol.Addr().String() + ", insecure: true}, sampling_ratio: 1}\n"
	// orders' app answers with the traceparent it received.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("traceparent"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	webOut := testaddr.Free(t)
	m.start(t, "orders", port(t, l.Addr().String()), testaddr.Free(t), "--local-config", m.write(t, "orders-local.yaml",
		tracing+"  sinks: [{name: decisions, type: file, file: {path: "+decisions+"}}]\n  decision: [decisions]\n"))
	m.start(t, "web", port(t, testaddr.Free(t)), webOut, "--local-config", m.write(t, "web-local.yaml", tracing), "--calls", "orders")

	call := func() (string, error) {
		got, err := get(webOut, "orders", "/orders/7")
		if err == nil && !strings.HasPrefix(got, "200 ") {
			err = fmt.Errorf("answer %q", got)
		}
		return strings.TrimPrefix(got, "200 "), err
	}
	var traceparent string
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := call()
		if err == nil {
			traceparent = got
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web -> orders: %v\n%s", err, m.sidecars.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// 00-TRACE-PARENT-01
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || parts[3] != "01" {
		t.Fatalf("orders' app got traceparent %q, want a sampled trace context", traceparent)
	}
	traceID, appParent := parts[1], parts[2]

	var spans []span
	deadline = time.Now().Add(15 * time.Second)
	for {
		spans = spans[:0]
		for _, s := range spansOf(recv) {
			if s.trace == traceID {
				spans = append(spans, s)
			}
		}
		if len(spans) >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	find := func(service string, kind tracepb.Span_SpanKind) span {
		t.Helper()
		for _, s := range spans {
			if s.service == service && s.kind == kind {
				return s
			}
		}
		t.Fatalf("no %v span of %s in the trace: %+v", kind, service, spans)
		return span{}
	}
	webServer, webClient := find("web", tracepb.Span_SPAN_KIND_SERVER), find("web", tracepb.Span_SPAN_KIND_CLIENT)
	ordersServer, ordersClient := find("orders", tracepb.Span_SPAN_KIND_SERVER), find("orders", tracepb.Span_SPAN_KIND_CLIENT)
	for _, s := range []span{webServer, webClient, ordersServer, ordersClient} {
		if s.namespace != "default" {
			t.Errorf("a span of %s has service.namespace %q, want default", s.service, s.namespace)
		}
	}
	switch {
	case webServer.parent != "":
		t.Errorf("web's server span has a parent %s: the app sent no trace context", webServer.parent)
	case webClient.parent != webServer.id:
		t.Errorf("web's client span is not its server span's child")
	case ordersServer.parent != webClient.id:
		t.Errorf("orders' server span is not the child of web's client span")
	case ordersClient.parent != ordersServer.id:
		t.Errorf("orders' client span is not its server span's child")
	case ordersClient.id != appParent:
		t.Errorf("orders' app got parent %s, want orders' client span %s", appParent, ordersClient.id)
	}
	if got, want := ordersServer.attrs["wasmgate.peer.identity"], "spiffe://wasmgate.local/ns/default/sa/web"; got != want {
		t.Errorf("orders' server span: wasmgate.peer.identity %q, want %q", got, want)
	}
	if id := webServer.attrs["wasmgate.peer.identity"]; id != "" {
		t.Errorf("web's server span, from its app in plain text, has a peer identity %q", id)
	}

	// orders' decision record of the call names its trace.
	deadline = time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(decisions)
		found := false
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var r map[string]any
			if json.Unmarshal([]byte(line), &r) == nil && r["trace_id"] == traceID {
				if r["verdict"] != "allow" || r["source_identity"] != "spiffe://wasmgate.local/ns/default/sa/web" {
					t.Errorf("orders' decision record of the call: %v", r)
				}
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decision record with trace_id %s in:\n%s", traceID, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
