// Package tracing gives the proxy its own spans, with the OpenTelemetry Go
// SDK: a server span per request and a client span per upstream attempt,
// so that retries show as sibling attempts under one request. Trace
// context travels in W3C traceparent and tracestate headers: read from
// the request, written into each attempt's outbound request. New traces
// are sampled at a configured ratio; a request that carries a trace
// context follows its parent's decision. Spans leave in batches over OTLP
// (gRPC or HTTP).
//
// The telemetry Wasm filter keeps making the spans its plugin code
// decides on; these are the proxy's, made whatever filters run.
//
// A nil *Tracer is valid and does nothing, as do the zero Span and
// Attempt, so the request path needs no check.
package tracing

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/buildinfo"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// Tracer makes the proxy's spans. It is safe for concurrent use.
type Tracer struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	prop   propagation.TraceContext
}

// New starts a tracer exporting to the configured OTLP receiver. hostname
// names this proxy in the spans' resource. The exporter connects lazily;
// spans made while the receiver is away are dropped by the SDK's bounded
// batch queue, never held.
func New(c *config.Tracing, hostname string) (*Tracer, error) {
	exp, err := newExporter(&c.OTLP)
	if err != nil {
		return nil, fmt.Errorf("telemetry.tracing.otlp: %w", err)
	}
	return NewWithExporter(exp, c.SamplingRatio, telemetry.Resource(c.ServiceName, c.ServiceNamespace, hostname)), nil
}

// NewWithExporter starts a tracer with any span exporter.
func NewWithExporter(exp sdktrace.SpanExporter, ratio float64, res *resource.Resource) *Tracer {
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(8192), sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(res),
	)
	return &Tracer{
		tp:     tp,
		tracer: tp.Tracer("github.com/wasmgate/wasmgate/proxy", trace.WithInstrumentationVersion(buildinfo.Version())),
	}
}

func newExporter(c *config.OTLP) (sdktrace.SpanExporter, error) {
	tc, err := telemetry.OTLPTLS(c)
	if err != nil {
		return nil, err
	}
	timeout := c.Timeout.Or(10 * time.Second)
	ctx := context.Background()
	switch c.Protocol {
	case "grpc":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(c.Endpoint), otlptracegrpc.WithTimeout(timeout)}
		if tc == nil {
			opts = append(opts, otlptracegrpc.WithInsecure())
		} else {
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tc)))
		}
		if len(c.Headers) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(c.Headers))
		}
		return otlptracegrpc.New(ctx, opts...)
	case "http":
		opts := []otlptracehttp.Option{
			otlptracehttp.WithEndpointURL(telemetry.OTLPURL(c.Endpoint, "/v1/traces")), otlptracehttp.WithTimeout(timeout),
		}
		if tc == nil {
			opts = append(opts, otlptracehttp.WithInsecure())
		} else {
			opts = append(opts, otlptracehttp.WithTLSClientConfig(tc))
		}
		if len(c.Headers) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(c.Headers))
		}
		return otlptracehttp.New(ctx, opts...)
	}
	return nil, fmt.Errorf("unknown protocol %q", c.Protocol)
}

// Shutdown exports the spans still queued, until ctx ends.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// Span is a request's server span. The zero Span does nothing.
type Span struct {
	ctx    context.Context
	span   trace.Span
	t      *Tracer
	method string
}

// requestCarrier reads and writes trace context headers of a fasthttp
// request.
type requestCarrier struct{ h *fasthttp.RequestHeader }

var _ propagation.TextMapCarrier = requestCarrier{}

func (c requestCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c requestCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c requestCarrier) Keys() []string {
	var keys []string
	for k := range c.h.All() {
		keys = append(keys, string(k))
	}
	return keys
}

// StartServer starts the server span of a request that began at start,
// continuing the trace of its traceparent header if it has one. listener
// names the listener the request came in on.
func (t *Tracer) StartServer(req *fasthttp.Request, listener string, start time.Time) Span {
	if t == nil {
		return Span{}
	}
	method := string(req.Header.Method())
	ctx := t.prop.Extract(context.Background(), requestCarrier{&req.Header})
	ctx, span := t.tracer.Start(ctx, method,
		trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start),
		trace.WithAttributes(
			attribute.String("http.request.method", method),
			attribute.String("url.path", string(req.URI().Path())),
			attribute.String("server.address", string(req.Header.Host())),
			attribute.String("wasmgate.listener", listener),
		))
	return Span{ctx: ctx, span: span, t: t, method: method}
}

// SetPeer records the verified SPIFFE ID of the client's certificate (a
// mesh peer's workload identity) as wasmgate.peer.identity.
func (s Span) SetPeer(identity string) {
	if identity == "" || s.span == nil || !s.span.IsRecording() {
		return
	}
	s.span.SetAttributes(attribute.String("wasmgate.peer.identity", identity))
}

// Recording reports whether the span records what it is told.
func (s Span) Recording() bool { return s.span != nil && s.span.IsRecording() }

// Sampled reports whether the span is recorded and exported.
func (s Span) Sampled() bool { return s.span != nil && s.span.SpanContext().IsSampled() }

// AppendTraceID appends the span's trace id in hex, for access records.
func (s Span) AppendTraceID(b []byte) []byte {
	if s.span == nil {
		return b
	}
	id := s.span.SpanContext().TraceID()
	return hex.AppendEncode(b, id[:])
}

// SetRoute names the route and cluster that serve the request; the span
// is renamed "METHOD route".
func (s Span) SetRoute(route, cluster string) {
	if s.span == nil || !s.span.IsRecording() {
		return
	}
	s.span.SetName(s.method + " " + route)
	s.span.SetAttributes(attribute.String("http.route", route), attribute.String("wasmgate.cluster", cluster))
}

// End ends the span now with the response's status; a 5xx marks it an
// error.
func (s Span) End(status int) {
	if s.span == nil {
		return
	}
	if s.span.IsRecording() {
		s.span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			s.span.SetStatus(codes.Error, "")
		}
	}
	s.span.End()
}

// Attempt is the client span of one upstream attempt. The zero Attempt
// does nothing.
type Attempt struct{ span trace.Span }

// StartAttempt starts the client span of attempt n (0 for the first try)
// to the endpoint at addr, and writes its trace context into the
// outbound request, replacing the client's.
func (s Span) StartAttempt(req *fasthttp.Request, n int, addr string) Attempt {
	if s.span == nil {
		return Attempt{}
	}
	ctx, span := s.t.tracer.Start(s.ctx, "attempt", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("http.request.method", string(req.Header.Method())),
			attribute.String("network.peer.address", addr),
			attribute.Int("http.request.resend_count", n),
		))
	s.t.prop.Inject(ctx, requestCarrier{&req.Header})
	return Attempt{span: span}
}

// End ends the attempt with the upstream's status, or err when the
// exchange failed.
func (a Attempt) End(status int, err error) {
	if a.span == nil {
		return
	}
	if a.span.IsRecording() {
		if err != nil {
			a.span.RecordError(err)
			a.span.SetStatus(codes.Error, err.Error())
		} else {
			a.span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= 500 {
				a.span.SetStatus(codes.Error, "")
			}
		}
	}
	a.span.End()
}
