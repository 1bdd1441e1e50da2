// Package telemetry is wasmgate's telemetry plugin: request counts and
// latency histograms through the host's metrics, W3C trace context
// propagated or started, and a span per request exported in batches to an
// OTLP/HTTP (JSON) collector.
//
// The module telemetry.wasm beside this file is built from ./module;
// ../firstparty holds it with the other first-party filters.
package telemetry

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
	"unsafe"

	"github.com/wasmgate/wasmgate/sdk"
)

// Config is the plugin's configuration.
type Config struct {
	// MetricPrefix starts every metric name; "" means "http".
	MetricPrefix string `json:"metric_prefix"`
	// SampleRate is the share of new traces (requests without a
	// traceparent) that are recorded, from 0 to 1. An incoming traceparent's
	// sampled flag is kept as it is.
	SampleRate float64 `json:"sample_rate"`
	// Collector is where spans go; with no cluster, no spans are exported
	// (trace context is still propagated).
	Collector Collector `json:"collector"`
	// TraceIDHeader, when set, names a response header that carries the
	// trace id back to the client.
	TraceIDHeader string `json:"trace_id_header"`
	// ServiceName is the service.name of exported spans; "" means
	// "wasmgate".
	ServiceName string `json:"service_name"`
}

// Collector is an OTLP/HTTP endpoint.
type Collector struct {
	// Cluster is the wasmgate cluster of the collector; it must be in the
	// plugin's allowed_clusters.
	Cluster string `json:"cluster"`
	// Path defaults to "/v1/traces"; Authority to the cluster's name.
	Path      string `json:"path"`
	Authority string `json:"authority"`
	// FlushInterval is how often spans are sent (Go duration, "5s" by
	// default); MaxBatch sends at once when that many are waiting (512).
	FlushInterval string `json:"flush_interval"`
	MaxBatch      int    `json:"max_batch"`
	// Timeout of each export; "5s" by default.
	Timeout string `json:"timeout"`
}

type telemetry struct {
	sdk.BaseFilter
	cfg      Config
	timeout  time.Duration
	batch    []span
	exported sdk.Counter
	failed   sdk.Counter
	dropped  sdk.Counter

	// recent holds the metrics of the label sets seen last, so that a
	// request's metrics are found without building their names.
	recent [8]series
	last   int
	// free holds states of finished requests for reuse.
	free []*state
}

// series is the metrics of one set of labels.
type series struct {
	used                   bool
	route, cluster, method string
	code                   int64
	requests               sdk.Counter
	duration               sdk.Histogram
}

// state is what a request carries from its headers to its log.
type state struct {
	start   time.Time
	trace   traceContext
	parent  [8]byte
	hasPar  bool
	sampled bool
	tp      [traceparentLen]byte // the traceparent sent upstream
}

// RootID is the root_id that selects this filter in a module holding
// several (../firstparty).
const RootID = "telemetry"

// New builds the filter of one configuration: the function the module
// registers with the SDK.
func New(config []byte) (sdk.Filter, error) { return newFilter(config) }

func newFilter(raw []byte) (sdk.Filter, error) {
	cfg, err := parseConfig(raw)
	if err != nil {
		return nil, err
	}
	t := &telemetry{cfg: cfg}
	p := cfg.MetricPrefix
	t.exported = sdk.Metrics.Counter(p + ".spans.exported")
	t.failed = sdk.Metrics.Counter(p + ".spans.export_failed")
	t.dropped = sdk.Metrics.Counter(p + ".spans.dropped")
	if cfg.Collector.Cluster != "" {
		t.timeout, _ = time.ParseDuration(cfg.Collector.Timeout)
		every, _ := time.ParseDuration(cfg.Collector.FlushInterval)
		if err := sdk.Tick(every, t.flush); err != nil {
			return nil, fmt.Errorf("starting the export timer: %w", err)
		}
	}
	return t, nil
}

func parseConfig(raw []byte) (Config, error) {
	var c Config
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &c); err != nil {
			return c, fmt.Errorf("telemetry config: %w", err)
		}
	}
	if c.MetricPrefix == "" {
		c.MetricPrefix = "http"
	}
	if c.ServiceName == "" {
		c.ServiceName = "wasmgate"
	}
	if c.SampleRate < 0 || c.SampleRate > 1 {
		return c, fmt.Errorf("telemetry config: sample_rate %v is not between 0 and 1", c.SampleRate)
	}
	col := &c.Collector
	if col.Path == "" {
		col.Path = "/v1/traces"
	}
	if col.Authority == "" {
		col.Authority = col.Cluster
	}
	if col.FlushInterval == "" {
		col.FlushInterval = "5s"
	}
	if col.Timeout == "" {
		col.Timeout = "5s"
	}
	if col.MaxBatch <= 0 {
		col.MaxBatch = 512
	}
	for name, v := range map[string]string{"flush_interval": col.FlushInterval, "timeout": col.Timeout} {
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			return c, fmt.Errorf("telemetry config: collector.%s %q is not a positive duration", name, v)
		}
	}
	return c, nil
}

func (t *telemetry) OnRequestHeaders(r *sdk.Request) sdk.Action {
	var s *state
	if n := len(t.free); n > 0 {
		s = t.free[n-1]
		t.free = t.free[:n-1]
		*s = state{}
	} else {
		s = new(state)
	}
	s.start = sdk.Now()
	if tc, ok := parseTraceparent(r.Header().Get("traceparent")); ok {
		s.trace, s.parent, s.hasPar = tc, tc.span, true
		s.sampled = tc.flags&1 == 1
	} else {
		binary.BigEndian.PutUint64(s.trace.id[:8], rand.Uint64())
		binary.BigEndian.PutUint64(s.trace.id[8:], rand.Uint64()|1)
		s.sampled = t.cfg.SampleRate > 0 && rand.Float64() < t.cfg.SampleRate
	}
	binary.BigEndian.PutUint64(s.trace.span[:], rand.Uint64()|1)
	s.trace.flags = 0
	if s.sampled {
		s.trace.flags = 1
	}
	s.trace.encode(&s.tp)
	// The host copies the value during the call: a view of s.tp will do.
	r.Header().Set("traceparent", unsafe.String(&s.tp[0], len(s.tp)))
	r.SetData(s)
	sdk.SetFilterState("trace_id", s.tp[3:35])
	return sdk.Continue
}

// Callbacks tells the host what the filter uses: the response's headers
// only to send the trace id back.
func (t *telemetry) Callbacks() sdk.Callbacks {
	c := sdk.CallbackRequestHeaders | sdk.CallbackLog
	if t.cfg.TraceIDHeader != "" {
		c |= sdk.CallbackResponseHeaders
	}
	return c
}

func (t *telemetry) OnResponseHeaders(w *sdk.Response) sdk.Action {
	if t.cfg.TraceIDHeader == "" {
		return sdk.Continue
	}
	if s, ok := w.Request().Data().(*state); ok {
		w.Header().Set(t.cfg.TraceIDHeader, unsafe.String(&s.tp[3], 32))
	}
	return sdk.Continue
}

func (t *telemetry) OnLog(r *sdk.Request) {
	s, ok := r.Data().(*state)
	if !ok {
		return
	}
	r.SetData(nil)
	t.log(r, s)
	if len(t.free) < 64 {
		t.free = append(t.free, s)
	}
}

func (t *telemetry) log(r *sdk.Request, s *state) {
	end := sdk.Now()
	code, _ := sdk.PropertyInt("response", "code")
	route, _ := sdk.PropertyString("route_name")
	cluster, _ := sdk.PropertyString("cluster_name")
	method := r.Method()
	m := t.series(route, cluster, method, code)
	m.requests.Inc()
	m.duration.Record(uint64(end.Sub(s.start).Milliseconds()))
	if !s.sampled || t.cfg.Collector.Cluster == "" {
		return
	}
	if len(t.batch) >= 4*t.cfg.Collector.MaxBatch {
		t.dropped.Inc()
		return
	}
	sp := span{
		trace: s.trace.id, id: s.trace.span, parent: s.parent, hasParent: s.hasPar,
		name: method + " " + orNone(route), start: s.start, end: end,
		method: method, path: r.Path(), authority: r.Authority(), status: int(code),
		route: route, cluster: cluster,
	}
	t.batch = append(t.batch, sp)
	if len(t.batch) >= t.cfg.Collector.MaxBatch {
		// The export outlives the request: it belongs to the root context.
		sdk.InRootContext(t.flush)
	}
}

// series returns the metrics of a request's labels, defining them the
// first time they are seen.
func (t *telemetry) series(route, cluster, method string, code int64) *series {
	for i := range t.recent {
		m := &t.recent[(t.last+i)%len(t.recent)]
		if m.used && m.code == code && m.method == method && m.route == route && m.cluster == cluster {
			t.last = (t.last + i) % len(t.recent)
			return m
		}
	}
	t.last = (t.last + 1) % len(t.recent)
	m := &t.recent[t.last]
	p := t.cfg.MetricPrefix
	labels := ";route=" + orNone(route) + ";cluster=" + orNone(cluster)
	*m = series{
		used: true, route: route, cluster: cluster, method: method, code: code,
		requests: sdk.Metrics.Counter(p + ".requests" + labels + ";method=" + method + ";status=" + strconv.FormatInt(code, 10)),
		duration: sdk.Metrics.Histogram(p + ".request_duration_ms" + labels),
	}
	return m
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// flush sends the waiting spans to the collector.
func (t *telemetry) flush() {
	if len(t.batch) == 0 {
		return
	}
	spans := t.batch
	t.batch = nil
	body := otlpJSON(t.cfg.ServiceName, spans)
	col := t.cfg.Collector
	req := &sdk.HTTPRequest{
		Method: "POST", Path: col.Path, Authority: col.Authority,
		Header: sdk.Fields{{"content-type", "application/json"}},
		Body:   body,
	}
	n := uint64(len(spans))
	err := sdk.HTTPCall(col.Cluster, req, t.timeout, func(resp *sdk.HTTPResponse, err error) {
		if err != nil || resp.Status/100 != 2 {
			t.failed.Add(n)
			if err == nil {
				err = fmt.Errorf("status %d", resp.Status)
			}
			sdk.LogWarnf("exporting %d spans to %s: %v", n, col.Cluster, err)
			return
		}
		t.exported.Add(n)
	})
	if err != nil {
		t.failed.Add(n)
		sdk.LogWarnf("exporting %d spans to %s: %v", n, col.Cluster, err)
	}
}
