package sdk

import "github.com/wasmgate/wasmgate/sdk/abi"

// Metrics live in the host and are shared by every instance of the
// plugin; a host may name them after the configuration (the root
// context) that defined them. A name is defined once per kind; defining it again returns the
// same metric. Names are free-form: the host exports them with the
// characters Prometheus does not allow replaced by "_".

// Counter is a metric that only goes up.
type Counter struct{ id uint32 }

// Gauge is a metric that goes up and down.
type Gauge struct{ id uint32 }

// Histogram records a distribution of values (milliseconds, bytes...).
type Histogram struct{ id uint32 }

// metricIDs caches definitions: defining a metric is a host call. The
// key holds the root context, since a host that runs several plugin
// configurations in one VM names each one's metrics after its plugin.
var metricIDs = map[metricKey]uint32{}

type metricKey struct {
	root uint32
	kind abi.MetricType
	name string
}

func define(kind abi.MetricType, name string) (uint32, error) {
	k := metricKey{kind: kind, name: name}
	if curRoot != nil {
		k.root = curRoot.id
	}
	if id, ok := metricIDs[k]; ok {
		return id, nil
	}
	id, st := hostDefineMetric(kind, name)
	if err := check("proxy_define_metric", st); err != nil {
		return 0, err
	}
	metricIDs[k] = id
	return id, nil
}

// NewCounter defines the counter called name, or returns it when it
// exists.
func NewCounter(name string) (Counter, error) {
	id, err := define(abi.MetricCounter, name)
	return Counter{id}, err
}

// NewGauge defines the gauge called name.
func NewGauge(name string) (Gauge, error) {
	id, err := define(abi.MetricGauge, name)
	return Gauge{id}, err
}

// NewHistogram defines the histogram called name.
func NewHistogram(name string) (Histogram, error) {
	id, err := define(abi.MetricHistogram, name)
	return Histogram{id}, err
}

// Add adds n to the counter; adding 0 does nothing (Envoy refuses an
// increment of 0).
func (c Counter) Add(n uint64) error {
	if n == 0 {
		return nil
	}
	return check("proxy_increment_metric", hostIncrementMetric(c.id, int64(n)))
}

// Inc adds one to the counter.
func (c Counter) Inc() error { return c.Add(1) }

// Value returns the counter's value.
func (c Counter) Value() (uint64, error) {
	v, st := hostGetMetric(c.id)
	return v, check("proxy_get_metric", st)
}

// Add adds delta, which may be negative, to the gauge.
func (g Gauge) Add(delta int64) error {
	return check("proxy_increment_metric", hostIncrementMetric(g.id, delta))
}

// Set sets the gauge.
func (g Gauge) Set(v int64) error {
	return check("proxy_record_metric", hostRecordMetric(g.id, uint64(v)))
}

// Value returns the gauge's value.
func (g Gauge) Value() (int64, error) {
	v, st := hostGetMetric(g.id)
	return int64(v), check("proxy_get_metric", st)
}

// Record adds a value to the histogram.
func (h Histogram) Record(v uint64) error {
	return check("proxy_record_metric", hostRecordMetric(h.id, v))
}

// Metrics gives counters, gauges and histograms by name, defining each
// on first use; errors are logged once and the metric then does nothing.
// It suits names built per request, such as
// "requests.route.<route>.status.<code>".
var Metrics metrics

type metrics struct{}

// Counter returns the counter called name.
func (metrics) Counter(name string) Counter {
	c, err := NewCounter(name)
	if err != nil {
		logf(LevelWarn, "defining counter %q: %v", name, err)
	}
	return c
}

// Gauge returns the gauge called name.
func (metrics) Gauge(name string) Gauge {
	g, err := NewGauge(name)
	if err != nil {
		logf(LevelWarn, "defining gauge %q: %v", name, err)
	}
	return g
}

// Histogram returns the histogram called name.
func (metrics) Histogram(name string) Histogram {
	h, err := NewHistogram(name)
	if err != nil {
		logf(LevelWarn, "defining histogram %q: %v", name, err)
	}
	return h
}
