package tracing

import (
	"bytes"
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/otlpreceiver"
)

// upstream is a real HTTP server that answers 503 to the first request
// and 200 after, and keeps the traceparent of each.
type upstream struct {
	addr string
	mu   sync.Mutex
	seen []string
}

func startUpstream(t *testing.T) *upstream {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: l.Addr().String()}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		u.mu.Lock()
		u.seen = append(u.seen, string(ctx.Request.Header.Peek("traceparent")))
		n := len(u.seen)
		u.mu.Unlock()
		if n == 1 {
			ctx.SetStatusCode(503)
			return
		}
		ctx.SetBodyString("ok")
	}}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return u
}

func startReceiver(t *testing.T, protocol string) (*otlpreceiver.Receiver, string) {
	rcv := otlpreceiver.New()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if protocol == "grpc" {
		s := rcv.ServeGRPC(l)
		t.Cleanup(s.Stop)
		return rcv, l.Addr().String()
	}
	srv := &http.Server{Handler: rcv.HTTPHandler()}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return rcv, "http://" + l.Addr().String()
}

// TestSpansAcrossRetry proxies one request by hand the way the request
// path does (a server span, an attempt that gets 503, a retry that gets
// 200) against a real upstream, exports over OTLP gRPC and HTTP to a real
// receiver, and checks the links: the server span continues the client's
// trace, both attempts are its children, and each attempt's traceparent
// reached the upstream.
func TestSpansAcrossRetry(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			rcv, endpoint := startReceiver(t, protocol)
			up := startUpstream(t)
			tr, err := New(&config.Tracing{OTLP: config.OTLP{Protocol: protocol, Endpoint: endpoint, Insecure: true}, SamplingRatio: 0}, "proxy-7")
			if err != nil {
				t.Fatal(err)
			}
			const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
			var in fasthttp.Request
			in.SetRequestURI("http://shop.example/cart?x=1")
			in.Header.Set("traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")

			span := tr.StartServer(&in, "public", time.Now())
			if !span.Sampled() {
				t.Fatal("a sampled parent's request is not sampled at ratio 0")
			}
			span.SetRoute("cart", "cart-svc")
			client := &fasthttp.Client{}
			status := 0
			for n := 0; n < 2; n++ {
				var out fasthttp.Request
				in.CopyTo(&out)
				out.SetHost(up.addr)
				a := span.StartAttempt(&out, n, up.addr)
				var resp fasthttp.Response
				err := client.Do(&out, &resp)
				status = resp.StatusCode()
				a.End(status, err)
				if err != nil {
					t.Fatal(err)
				}
			}
			span.End(status)
			if got := string(span.AppendTraceID(nil)); got != clientTrace {
				t.Errorf("trace id %s, want the client's %s", got, clientTrace)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tr.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}

			var spans []*tracepb.Span
			for _, rs := range rcv.Spans() {
				for _, ss := range rs.ScopeSpans {
					spans = append(spans, ss.Spans...)
				}
			}
			if len(spans) != 3 {
				t.Fatalf("received %d spans, want 3", len(spans))
			}
			var server *tracepb.Span
			var attempts []*tracepb.Span
			for _, s := range spans {
				if hex.EncodeToString(s.TraceId) != clientTrace {
					t.Errorf("span %q is in trace %x", s.Name, s.TraceId)
				}
				switch s.Kind {
				case tracepb.Span_SPAN_KIND_SERVER:
					server = s
				case tracepb.Span_SPAN_KIND_CLIENT:
					attempts = append(attempts, s)
				}
			}
			if server == nil || len(attempts) != 2 {
				t.Fatalf("spans %v", spans)
			}
			if hex.EncodeToString(server.ParentSpanId) != clientSpan || server.Name != "GET cart" {
				t.Errorf("server span %q has parent %x", server.Name, server.ParentSpanId)
			}
			up.mu.Lock()
			seen := append([]string(nil), up.seen...)
			up.mu.Unlock()
			for i, a := range attempts {
				if !bytes.Equal(a.ParentSpanId, server.SpanId) {
					t.Errorf("attempt %d's parent is %x, not the server span %x", i, a.ParentSpanId, server.SpanId)
				}
				want := "00-" + clientTrace + "-" + hex.EncodeToString(a.SpanId) + "-01"
				found := false
				for _, tp := range seen {
					found = found || tp == want
				}
				if !found {
					t.Errorf("the upstream never saw traceparent %s (saw %v)", want, seen)
				}
			}
			codes := map[int64]bool{}
			for _, a := range attempts {
				for _, kv := range a.Attributes {
					if kv.Key == "http.response.status_code" {
						codes[kv.Value.GetIntValue()] = true
					}
				}
			}
			if !codes[503] || !codes[200] {
				t.Errorf("attempt statuses %v, want 503 and 200", codes)
			}
		})
	}
}

// TestSampling: a new trace is sampled at the ratio; a parent's decision
// wins over it; a nil tracer does nothing.
func TestSampling(t *testing.T) {
	rcv, endpoint := startReceiver(t, "grpc")
	_ = rcv
	for _, tc := range []struct {
		ratio       float64
		traceparent string
		want        bool
	}{
		{1, "", true},
		{0, "", false},
		{1, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", false},
		{0, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
	} {
		tr, err := New(&config.Tracing{OTLP: config.OTLP{Protocol: "grpc", Endpoint: endpoint, Insecure: true}, SamplingRatio: tc.ratio}, "h")
		if err != nil {
			t.Fatal(err)
		}
		var req fasthttp.Request
		req.SetRequestURI("http://a/")
		if tc.traceparent != "" {
			req.Header.Set("traceparent", tc.traceparent)
		}
		s := tr.StartServer(&req, "l", time.Now())
		if s.Sampled() != tc.want {
			t.Errorf("ratio %v traceparent %q: sampled %v", tc.ratio, tc.traceparent, s.Sampled())
		}
		s.End(200)
		_ = tr.Shutdown(context.Background())
	}
	var nilTracer *Tracer
	s := nilTracer.StartServer(&fasthttp.Request{}, "l", time.Now())
	var out fasthttp.Request
	s.StartAttempt(&out, 0, "x").End(200, nil)
	s.End(200)
	if strings.Contains(out.Header.String(), "traceparent") {
		t.Error("a nil tracer wrote a traceparent")
	}
}
