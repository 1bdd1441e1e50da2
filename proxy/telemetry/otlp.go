package telemetry

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/buildinfo"
)

// otlpWriter sends records as OpenTelemetry log records. The SDK's
// LoggerProvider builds them (resource, scope, limits); a processor that
// only collects hands them back to the writer, which exports each batch
// itself, so the sink's queue is the only queue and its drop counters
// see every loss. The exporter's own retries are off: the sink backs off.
type otlpWriter struct {
	exp     sdklog.Exporter
	logger  otellog.Logger
	col     *collectProcessor
	timeout time.Duration
}

var _ writer = (*otlpWriter)(nil)

// collectProcessor keeps what the logger emits until the writer exports
// it. Only the sink's goroutine emits, so it needs no lock.
type collectProcessor struct {
	batch []sdklog.Record
	// traceID, when valid, is set on the next record emitted.
	traceID trace.TraceID
}

var _ sdklog.Processor = (*collectProcessor)(nil)

func (c *collectProcessor) OnEmit(_ context.Context, r *sdklog.Record) error {
	if c.traceID.IsValid() {
		r.SetTraceID(c.traceID)
		c.traceID = trace.TraceID{}
	}
	c.batch = append(c.batch, r.Clone())
	return nil
}

// setTrace has the next record emitted carry the trace of hex, a trace
// id in hex; one of another length is none.
func (c *collectProcessor) setTrace(hexID []byte) {
	if len(hexID) != 32 {
		return
	}
	var id trace.TraceID
	if _, err := hex.Decode(id[:], hexID); err == nil {
		c.traceID = id
	}
}

func (c *collectProcessor) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }
func (c *collectProcessor) Shutdown(context.Context) error                         { return nil }
func (c *collectProcessor) ForceFlush(context.Context) error                       { return nil }

// Resource describes this proxy to OpenTelemetry receivers.
func Resource(serviceName, namespace, hostname string) *resource.Resource {
	if serviceName == "" {
		serviceName = "wasmgate"
	}
	attrs := []attribute.KeyValue{
		attribute.String("service.name", serviceName),
		attribute.String("service.version", buildinfo.Version()),
		attribute.String("host.name", hostname),
	}
	if namespace != "" {
		attrs = append(attrs, attribute.String("service.namespace", namespace))
	}
	return resource.NewSchemaless(attrs...)
}

func newOTLPWriter(c *config.OTLP, hostname string) (*otlpWriter, error) {
	exp, err := newLogExporter(c)
	if err != nil {
		return nil, err
	}
	col := &collectProcessor{}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(col), sdklog.WithResource(Resource("", "", hostname)))
	return &otlpWriter{
		exp: exp, col: col, timeout: c.Timeout.Or(10 * time.Second),
		logger: lp.Logger("github.com/wasmgate/wasmgate/proxy/telemetry", otellog.WithInstrumentationVersion(buildinfo.Version())),
	}, nil
}

// OTLPTLS builds the TLS configuration of an OTLP endpoint; nil when the
// connection is in clear text.
func OTLPTLS(c *config.OTLP) (*tls.Config, error) {
	if c.Insecure {
		return nil, nil
	}
	host := c.Endpoint
	if c.Protocol == "http" {
		if u, err := url.Parse(c.Endpoint); err == nil {
			host = u.Host
		}
	}
	return clientTLS(c.TLS, host)
}

// OTLPURL returns an http endpoint with the signal's path (such as
// "/v1/logs") when its URL has none.
func OTLPURL(endpoint, signalPath string) string {
	u, err := url.Parse(endpoint)
	if err != nil || strings.Trim(u.Path, "/") != "" {
		return endpoint
	}
	u.Path = signalPath
	return u.String()
}

func newLogExporter(c *config.OTLP) (sdklog.Exporter, error) {
	tc, err := OTLPTLS(c)
	if err != nil {
		return nil, err
	}
	timeout := c.Timeout.Or(10 * time.Second)
	ctx := context.Background()
	switch c.Protocol {
	case "grpc":
		opts := []otlploggrpc.Option{
			otlploggrpc.WithEndpoint(c.Endpoint), otlploggrpc.WithTimeout(timeout),
			otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: false}),
		}
		if tc == nil {
			opts = append(opts, otlploggrpc.WithInsecure())
		} else {
			opts = append(opts, otlploggrpc.WithTLSCredentials(credentials.NewTLS(tc)))
		}
		if len(c.Headers) > 0 {
			opts = append(opts, otlploggrpc.WithHeaders(c.Headers))
		}
		return otlploggrpc.New(ctx, opts...)
	case "http":
		opts := []otlploghttp.Option{
			otlploghttp.WithEndpointURL(OTLPURL(c.Endpoint, "/v1/logs")), otlploghttp.WithTimeout(timeout),
			otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: false}),
		}
		if tc == nil {
			opts = append(opts, otlploghttp.WithInsecure())
		} else {
			opts = append(opts, otlploghttp.WithTLSClientConfig(tc))
		}
		if len(c.Headers) > 0 {
			opts = append(opts, otlploghttp.WithHeaders(c.Headers))
		}
		return otlploghttp.New(ctx, opts...)
	}
	return nil, fmt.Errorf("unknown OTLP protocol %q", c.Protocol)
}

// otelSeverity maps a record's syslog severity to OpenTelemetry's.
func otelSeverity(r *Record) (otellog.Severity, string) {
	switch severity(r) {
	case 3:
		return otellog.SeverityError, "ERROR"
	case 4:
		return otellog.SeverityWarn, "WARN"
	}
	return otellog.SeverityInfo, "INFO"
}

// write turns the record into a log record: the event name is
// "wasmgate.<kind>", the body the JSON record, and the attributes the
// fields a receiver indexes. An access record's trace id links it to its
// trace.
func (w *otlpWriter) write(ctx context.Context, r *Record, line []byte) error {
	var lr otellog.Record
	lr.SetTimestamp(r.Time)
	lr.SetObservedTimestamp(time.Now())
	lr.SetEventName("wasmgate." + r.Kind.String())
	sev, text := otelSeverity(r)
	lr.SetSeverity(sev)
	lr.SetSeverityText(text)
	lr.SetBody(otellog.StringValue(string(line)))
	lr.AddAttributes(otellog.String("wasmgate.kind", r.Kind.String()))
	switch r.Kind {
	case KindAccess:
		a := &r.Access
		lr.AddAttributes(
			otellog.String("http.request.method", string(a.Method)),
			otellog.Int("http.response.status_code", a.Status),
			otellog.String("url.path", string(a.Path)),
			otellog.String("wasmgate.route", a.Route),
			otellog.String("wasmgate.request_id", string(a.RequestID)),
		)
		w.col.setTrace(a.TraceID)
	case KindDecision:
		d := &r.Decision
		lr.AddAttributes(
			otellog.String("wasmgate.verdict", d.Verdict.String()),
			otellog.String("wasmgate.rule", d.Rule),
			otellog.String("wasmgate.source_identity", string(d.SourceIdentity)),
			otellog.String("wasmgate.destination", d.Destination),
			otellog.String("wasmgate.request_id", string(d.RequestID)),
		)
		w.col.setTrace(d.TraceID)
	case KindEvent:
		lr.AddAttributes(otellog.String("wasmgate.event", r.Event.Type))
	}
	w.logger.Emit(ctx, lr)
	return nil
}

func (w *otlpWriter) flush(ctx context.Context) error {
	if len(w.col.batch) == 0 {
		return nil
	}
	err := w.exp.Export(ctx, w.col.batch)
	clear(w.col.batch)
	w.col.batch = w.col.batch[:0]
	return err
}

func (w *otlpWriter) reset() {}

func (w *otlpWriter) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return w.exp.Shutdown(ctx)
}
