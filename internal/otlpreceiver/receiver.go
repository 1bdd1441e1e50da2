// Package otlpreceiver is an OpenTelemetry receiver for tests: it serves
// the OTLP collector services (logs, traces, metrics) generated from the
// OTLP protocol definitions, over gRPC and over HTTP with protobuf bodies,
// and keeps every request it gets. It is the real protocol, so an exporter
// that reaches it would reach a collector.
package otlpreceiver

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Receiver keeps what it receives. Its methods are safe for concurrent use.
type Receiver struct {
	collogs.UnimplementedLogsServiceServer
	coltrace.UnimplementedTraceServiceServer
	colmetrics.UnimplementedMetricsServiceServer

	mu      sync.Mutex
	logs    []*logspb.ResourceLogs
	spans   []*tracepb.ResourceSpans
	metrics []*metricspb.ResourceMetrics
	// changed is closed and replaced whenever something arrives.
	changed chan struct{}
	// Fail, when it returns an error, rejects the request.
	Fail func() error
}

// New returns an empty receiver.
func New() *Receiver { return &Receiver{changed: make(chan struct{})} }

func (r *Receiver) fail() error {
	if r.Fail != nil {
		return r.Fail()
	}
	return nil
}

func (r *Receiver) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// exportLogs keeps logs.
func (r *Receiver) exportLogs(req *collogs.ExportLogsServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, req.ResourceLogs...)
	r.notify()
}

// LogsServer is the logs service of r.
func (r *Receiver) LogsServer() collogs.LogsServiceServer { return logsServer{r} }

type logsServer struct{ *Receiver }

func (s logsServer) Export(_ context.Context, req *collogs.ExportLogsServiceRequest) (*collogs.ExportLogsServiceResponse, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	s.exportLogs(req)
	return &collogs.ExportLogsServiceResponse{}, nil
}

// TraceServer is the trace service of r.
func (r *Receiver) TraceServer() coltrace.TraceServiceServer { return traceServer{r} }

type traceServer struct{ *Receiver }

func (s traceServer) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.spans = append(s.spans, req.ResourceSpans...)
	s.notify()
	s.mu.Unlock()
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// MetricsServer is the metrics service of r.
func (r *Receiver) MetricsServer() colmetrics.MetricsServiceServer { return metricsServer{r} }

type metricsServer struct{ *Receiver }

func (s metricsServer) Export(_ context.Context, req *colmetrics.ExportMetricsServiceRequest) (*colmetrics.ExportMetricsServiceResponse, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.metrics = append(s.metrics, req.ResourceMetrics...)
	s.notify()
	s.mu.Unlock()
	return &colmetrics.ExportMetricsServiceResponse{}, nil
}

// Logs returns the log records received so far, flattened.
func (r *Receiver) Logs() []*logspb.ResourceLogs {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*logspb.ResourceLogs(nil), r.logs...)
}

// Spans returns the span batches received so far.
func (r *Receiver) Spans() []*tracepb.ResourceSpans {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.ResourceSpans(nil), r.spans...)
}

// Metrics returns the metric batches received so far.
func (r *Receiver) Metrics() []*metricspb.ResourceMetrics {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*metricspb.ResourceMetrics(nil), r.metrics...)
}

// Changed returns a channel closed when the next request arrives.
func (r *Receiver) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// ServeGRPC serves the three services over gRPC on l until Stop.
func (r *Receiver) ServeGRPC(l net.Listener) *grpc.Server {
	s := grpc.NewServer()
	collogs.RegisterLogsServiceServer(s, r.LogsServer())
	coltrace.RegisterTraceServiceServer(s, r.TraceServer())
	colmetrics.RegisterMetricsServiceServer(s, r.MetricsServer())
	go func() { _ = s.Serve(l) }()
	return s
}

// HTTPHandler serves OTLP/HTTP with protobuf bodies at /v1/logs,
// /v1/traces and /v1/metrics.
func (r *Receiver) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/logs", func(w http.ResponseWriter, req *http.Request) {
		var in collogs.ExportLogsServiceRequest
		serveHTTP(w, req, &in, r, func() { r.exportLogs(&in) }, &collogs.ExportLogsServiceResponse{})
	})
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
		var in coltrace.ExportTraceServiceRequest
		serveHTTP(w, req, &in, r, func() { _, _ = r.TraceServer().Export(req.Context(), &in) }, &coltrace.ExportTraceServiceResponse{})
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, req *http.Request) {
		var in colmetrics.ExportMetricsServiceRequest
		serveHTTP(w, req, &in, r, func() { _, _ = r.MetricsServer().Export(req.Context(), &in) }, &colmetrics.ExportMetricsServiceResponse{})
	})
	return mux
}

func serveHTTP(w http.ResponseWriter, req *http.Request, in proto.Message, r *Receiver, keep func(), out proto.Message) {
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "content type must be application/x-protobuf, not "+ct, http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(req.Body)
	if err == nil {
		err = proto.Unmarshal(body, in)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := r.fail(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	keep()
	b, _ := proto.Marshal(out)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(b)
}
