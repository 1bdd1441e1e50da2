package telemetry

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Traffic is a proxy's last minute, as the fleet heartbeat reports it.
type Traffic struct {
	// RequestRate is requests per second over the last minute (or since
	// the first sample, when younger).
	RequestRate float64
	// Ratio5xx is the share of those requests answered 5xx.
	Ratio5xx float64
	// Dropped is the telemetry records dropped since start.
	Dropped uint64
}

// TrafficSampler reads the request counters of a Prometheus registry
// (wasmgate_http_requests_total, by its code label) and the telemetry
// drop counters, and keeps a minute of samples to compute Traffic. Sample
// is meant to be called every few seconds, off the request path; it is
// safe for concurrent use.
type TrafficSampler struct {
	g   prometheus.Gatherer
	now func() time.Time

	mu      sync.Mutex
	samples []trafficSample // oldest first, at most a minute apart
}

type trafficSample struct {
	at          time.Time
	total, errs float64
}

// NewTrafficSampler samples g.
func NewTrafficSampler(g prometheus.Gatherer) *TrafficSampler {
	return &TrafficSampler{g: g, now: time.Now}
}

// Sample gathers the counters and returns the last minute's traffic.
func (s *TrafficSampler) Sample() Traffic {
	var cur trafficSample
	var dropped float64
	cur.at = s.now()
	mfs, _ := s.g.Gather()
	for _, mf := range mfs {
		switch mf.GetName() {
		case "wasmgate_http_requests_total":
			for _, m := range mf.Metric {
				v := m.GetCounter().GetValue()
				cur.total += v
				for _, l := range m.Label {
					if l.GetName() == "code" && l.GetValue() == "5xx" {
						cur.errs += v
					}
				}
			}
		case "wasmgate_telemetry_dropped_total":
			for _, m := range mf.Metric {
				dropped += m.GetCounter().GetValue()
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, cur)
	for len(s.samples) > 2 && cur.at.Sub(s.samples[1].at) >= time.Minute {
		s.samples = s.samples[1:]
	}
	t := Traffic{Dropped: uint64(dropped)}
	first := s.samples[0]
	if d := cur.at.Sub(first.at).Seconds(); d > 0 {
		n := cur.total - first.total
		t.RequestRate = n / d
		if n > 0 {
			t.Ratio5xx = (cur.errs - first.errs) / n
		}
	}
	return t
}
