package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// gauges reports, at scrape time, state the request path keeps in its own
// counters: connections and requests in flight per upstream endpoint of the
// live snapshot, and open downstream connections per listener.
type gauges struct {
	s          *Server
	upConns    *prometheus.Desc
	upActive   *prometheus.Desc
	downConns  *prometheus.Desc
	upRequests *prometheus.Desc
}

var _ prometheus.Collector = (*gauges)(nil)

func newGauges(s *Server) *gauges {
	return &gauges{
		s: s,
		upConns: prometheus.NewDesc("wasmgate_upstream_connections",
			"Open connections to an upstream endpoint.", []string{"cluster", "endpoint"}, nil),
		upActive: prometheus.NewDesc("wasmgate_upstream_requests_active",
			"Requests in flight to an upstream endpoint.", []string{"cluster", "endpoint"}, nil),
		upRequests: prometheus.NewDesc("wasmgate_upstream_requests_total",
			"Requests sent to an upstream endpoint since its connection pool was created.", []string{"cluster", "endpoint"}, nil),
		downConns: prometheus.NewDesc("wasmgate_downstream_connections",
			"Open downstream connections of a listener.", []string{"listener"}, nil),
	}
}

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.upConns
	ch <- g.upActive
	ch <- g.upRequests
	ch <- g.downConns
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	if snap := g.s.snap.Load(); snap != nil {
		for name, c := range snap.Clusters {
			for _, e := range c.Endpoints() {
				ch <- prometheus.MustNewConstMetric(g.upConns, prometheus.GaugeValue, float64(e.Conns()), name, e.Addr)
				ch <- prometheus.MustNewConstMetric(g.upActive, prometheus.GaugeValue, float64(e.ActiveRequests()), name, e.Addr)
				ch <- prometheus.MustNewConstMetric(g.upRequests, prometheus.CounterValue, float64(e.Requests()), name, e.Addr)
			}
		}
	}
	g.s.mu.Lock()
	defer g.s.mu.Unlock()
	for name, l := range g.s.listeners {
		ch <- prometheus.MustNewConstMetric(g.downConns, prometheus.GaugeValue, float64(l.OpenConnections()), name)
	}
}
