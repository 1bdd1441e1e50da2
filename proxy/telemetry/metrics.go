package telemetry

import "github.com/prometheus/client_golang/prometheus"

var (
	descSent = prometheus.NewDesc("wasmgate_telemetry_records_total",
		"Records a telemetry sink delivered, by sink and kind.", []string{"sink", "kind"}, nil)
	descDropped = prometheus.NewDesc("wasmgate_telemetry_dropped_total",
		"Records a telemetry sink dropped, by sink, kind and reason (queue_full, send_failed, shutdown).",
		[]string{"sink", "kind", "reason"}, nil)
	descErrors = prometheus.NewDesc("wasmgate_telemetry_sink_errors_total",
		"Failed writes of a telemetry sink (each followed by a reconnect with backoff).", []string{"sink"}, nil)
	descQueue = prometheus.NewDesc("wasmgate_telemetry_queue_records",
		"Records waiting in a telemetry sink's queue.", []string{"sink"}, nil)
	descCapacity = prometheus.NewDesc("wasmgate_telemetry_queue_capacity_records",
		"The length of a telemetry sink's queue.", []string{"sink"}, nil)
)

// Collector returns the pipeline's metrics. Every series of a configured
// sink exists from the start, at zero, so alerts see them before the
// first drop. The counters are read when scraped: counting costs the
// request path one atomic add.
func (p *Pipeline) Collector() prometheus.Collector { return collector{p} }

type collector struct{ p *Pipeline }

var _ prometheus.Collector = collector{}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSent
	ch <- descDropped
	ch <- descErrors
	ch <- descQueue
	ch <- descCapacity
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.p.tab.Load().sinks {
		for k := range numKinds {
			ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(s.sent[k].Load()), s.name, k.String())
			for r := range numReasons {
				ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue,
					float64(s.dropped[k][r].Load()), s.name, k.String(), reasonNames[r])
			}
		}
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(s.errors.Load()), s.name)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(len(s.queue)), s.name)
		ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, float64(cap(s.queue)), s.name)
	}
}
