// Package metrics holds the proxy's Prometheus metrics. Label values are
// resolved when a snapshot is built, so the request path only touches
// pre-resolved counters and histograms: atomic adds, no lock, no
// allocation.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/wasmgate/wasmgate/internal/buildinfo"
)

// Metrics is the proxy's set of metrics, registered on one registry.
type Metrics struct {
	Registry *prometheus.Registry

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	// Reloads counts configuration reloads by result ("success", "failure").
	Reloads *prometheus.CounterVec
	// LastReloadSuccess is 1 when the last reload succeeded, else 0.
	LastReloadSuccess prometheus.Gauge
	// LastReloadTime is the Unix time of the last successful reload.
	LastReloadTime prometheus.Gauge
	// ConfigVersion carries the live config version as a label.
	ConfigVersion *prometheus.GaugeVec
	// AccessLogDropped counts access log entries dropped because the
	// writer could not keep up.
	AccessLogDropped prometheus.Counter
	// UpstreamErrors counts failed upstream exchanges by cluster and kind.
	UpstreamErrors *prometheus.CounterVec

	tcpConns  *prometheus.CounterVec
	tcpActive *prometheus.GaugeVec
	tcpBytes  *prometheus.CounterVec

	mirrors *prometheus.CounterVec

	resilience
}

// Mirror results: a copy that got an answer (any status), one that
// failed (connect, timeout, reset), one not sent (its body streams past
// 64 KiB or through a filter, a circuit breaker refused it, or the
// cluster had no endpoint).
const (
	MirrorAnswered = iota
	MirrorFailed
	MirrorSkipped
)

var mirrorResults = [...]string{"answered", "failed", "skipped"}

// MirrorStats count one route's copies to one cluster.
type MirrorStats struct {
	results [len(mirrorResults)]prometheus.Counter
}

// Count counts a copy's result (MirrorAnswered, ...). It is safe for
// concurrent use, allocates nothing, and does nothing on nil.
func (s *MirrorStats) Count(result int) {
	if s != nil {
		s.results[result].Inc()
	}
}

// Mirror returns the counters of a route's copies of requests to cluster.
func (m *Metrics) Mirror(listener, route, cluster string) *MirrorStats {
	s := &MirrorStats{}
	for i, r := range mirrorResults {
		s.results[i] = m.mirrors.WithLabelValues(listener, route, cluster, r)
	}
	return s
}

// TCPStats are the pre-resolved metrics of a TCP listener's connections
// to one cluster.
type TCPStats struct {
	Connections prometheus.Counter
	Active      prometheus.Gauge
	// BytesDown counts the client's bytes read, BytesUp the upstream's.
	BytesDown, BytesUp prometheus.Counter
	// ConnectFailures counts endpoints that could not be reached
	// (wasmgate_upstream_errors_total, kind connect).
	ConnectFailures prometheus.Counter
}

// TCP returns the metrics of a TCP listener's connections to cluster.
func (m *Metrics) TCP(listener, cluster string) *TCPStats {
	return &TCPStats{
		Connections:     m.tcpConns.WithLabelValues(listener, cluster),
		Active:          m.tcpActive.WithLabelValues(listener),
		BytesDown:       m.tcpBytes.WithLabelValues(listener, "downstream"),
		BytesUp:         m.tcpBytes.WithLabelValues(listener, "upstream"),
		ConnectFailures: m.UpstreamErrors.WithLabelValues(cluster, "connect"),
	}
}

// New creates the metrics on a new registry, with Go and process
// collectors and build info.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_http_requests_total",
			Help: "Downstream requests by listener, route, cluster and status class.",
		}, []string{"listener", "route", "cluster", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wasmgate_http_request_duration_seconds",
			Help:    "Time from the first request byte to the response headers, by listener, route and cluster.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"listener", "route", "cluster"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_config_reloads_total",
			Help: "Configuration reloads by result.",
		}, []string{"result"}),
		LastReloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wasmgate_config_last_reload_success",
			Help: "1 when the last configuration reload succeeded, 0 when it failed.",
		}),
		LastReloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wasmgate_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration reload.",
		}),
		ConfigVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasmgate_config_info",
			Help: "The live configuration version, as a label; the value is always 1.",
		}, []string{"version"}),
		AccessLogDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wasmgate_access_log_dropped_total",
			Help: "Access log entries dropped because the writer could not keep up.",
		}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_upstream_errors_total",
			Help: "Failed upstream exchanges by cluster and kind (connect, timeout, reset, overflow).",
		}, []string{"cluster", "kind"}),
		tcpConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_tcp_connections_total",
			Help: "Connections accepted by TCP listeners (tcp_proxy), by listener and cluster.",
		}, []string{"listener", "cluster"}),
		tcpActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasmgate_tcp_active_connections",
			Help: "Open connections of TCP listeners (tcp_proxy).",
		}, []string{"listener"}),
		tcpBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_tcp_received_bytes_total",
			Help: "Bytes TCP listeners read, from the client (direction downstream) or the upstream (upstream).",
		}, []string{"listener", "direction"}),
	}
	m.mirrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wasmgate_mirror_requests_total",
		Help: "Copies of requests that routes' mirrors made, by listener, route, cluster and result: answered (any status), failed, skipped (not sent: a streamed body over 64 KiB or a filtered one, a circuit breaker, no endpoint).",
	}, []string{"listener", "route", "cluster", "result"})
	m.resilience = newResilience()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wasmgate_build_info",
		Help: "Build information; the value is always 1.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(buildinfo.Version(), buildinfo.GoVersion()).Set(1)
	// The series the documentation names are there from the start, at
	// zero, so that a dashboard or an alert finds them before the first
	// event; per-cluster and per-route series are declared when a
	// snapshot resolves them (Route, Cluster).
	for _, r := range reloadResults {
		m.Reloads.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.duration, m.Reloads, m.LastReloadSuccess, m.LastReloadTime,
		m.ConfigVersion, m.AccessLogDropped, m.UpstreamErrors, m.tcpConns, m.tcpActive, m.tcpBytes, m.mirrors, build,
		m.ejections, m.healthTransitions, m.retries, m.overflows, m.rateLimited, m.healthyEndpoints, m.panicMode,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Route returns the pre-resolved metrics of one (listener, route, cluster).
// cluster is empty for routes answered without an upstream.
func (m *Metrics) Route(listener, route, cluster string) *RouteStats {
	s := &RouteStats{}
	for i, class := range codeClasses {
		s.codes[i] = m.requests.WithLabelValues(listener, route, cluster, class)
	}
	s.duration = m.duration.WithLabelValues(listener, route, cluster)
	return s
}

// reloadResults are the values of wasmgate_config_reloads_total's label.
var reloadResults = [...]string{"success", "failure"}

var codeClasses = [...]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// RouteStats are the counters of one (listener, route, cluster).
type RouteStats struct {
	codes    [len(codeClasses)]prometheus.Counter
	duration prometheus.Observer
}

// Observe records one response. It is safe for concurrent use and does not
// allocate.
func (s *RouteStats) Observe(status int, d time.Duration) {
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	s.codes[class].Inc()
	s.duration.Observe(d.Seconds())
}
