package telemetry

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Overflow is the label value of every RED label once the cap is reached.
const Overflow = "_overflow"

// DefaultMaxSeries is the RED metrics' cap on label sets.
const DefaultMaxSeries = 2000

// RED are the rate, errors and duration of requests per route, destination
// service and source identity (the peer's SPIFFE ID under mTLS, empty
// otherwise):
//
//	wasmgate_red_requests_total{route, destination, source_identity, code_class}
//	wasmgate_red_request_duration_seconds{route, destination, source_identity}
//
// Label cardinality is capped: at most MaxSeries distinct (route,
// destination, source_identity) sets. A request whose set is new once the
// cap is reached counts under one set whose three labels are "_overflow",
// and wasmgate_red_overflow_total counts such requests, so dashboards and
// alerts see that the cap bites. Sets are never forgotten while the
// process lives; a restart starts afresh.
type RED struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	overflow prometheus.Counter
	max      int // guarded by mu

	mu sync.Mutex
	n  int
	// table is copied on write: the request path reads it with one atomic
	// load and two map lookups, and takes no lock.
	table    atomic.Pointer[map[redKey]map[string]*REDStats]
	overStat *REDStats
}

type redKey struct{ route, destination string }

// NewRED makes the RED metrics with a cap of maxSeries label sets (zero
// means DefaultMaxSeries).
func NewRED(maxSeries int) *RED {
	if maxSeries <= 0 {
		maxSeries = DefaultMaxSeries
	}
	r := &RED{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_red_requests_total",
			Help: "Requests by route, destination service, source identity and status class; label sets are capped (see wasmgate_red_overflow_total).",
		}, []string{"route", "destination", "source_identity", "code_class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wasmgate_red_request_duration_seconds",
			Help:    "Request duration by route, destination service and source identity.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "destination", "source_identity"}),
		overflow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wasmgate_red_overflow_total",
			Help: "Requests counted under the _overflow label set because the RED label sets reached their cap.",
		}),
		max: maxSeries,
	}
	empty := map[redKey]map[string]*REDStats{}
	r.table.Store(&empty)
	r.overStat = r.newStats(Overflow, Overflow, Overflow)
	r.overStat.overflow = r.overflow
	return r
}

// SetMaxSeries changes the cap of label sets (zero means
// DefaultMaxSeries). Sets already counted stay counted; while they are
// as many as the cap or more, new ones are counted under _overflow.
func (r *RED) SetMaxSeries(n int) {
	if n <= 0 {
		n = DefaultMaxSeries
	}
	r.mu.Lock()
	r.max = n
	r.mu.Unlock()
}

// Collectors returns the metrics to register.
func (r *RED) Collectors() []prometheus.Collector {
	return []prometheus.Collector{r.requests, r.duration, r.overflow}
}

// REDStats are the resolved series of one label set.
type REDStats struct {
	codes    [6]prometheus.Counter
	duration prometheus.Observer
	overflow prometheus.Counter
}

var redClasses = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

func (r *RED) newStats(route, destination, identity string) *REDStats {
	s := &REDStats{duration: r.duration.WithLabelValues(route, destination, identity)}
	for i, c := range redClasses {
		s.codes[i] = r.requests.WithLabelValues(route, destination, identity, c)
	}
	return s
}

// Stats returns the series of a label set. The strings should be
// long-lived (from the configuration and the connection): a new set keeps
// them. A known set costs no lock and no allocation.
func (r *RED) Stats(route, destination, identity string) *REDStats {
	if ids, ok := (*r.table.Load())[redKey{route, destination}]; ok {
		if s, ok := ids[identity]; ok {
			return s
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.table.Load()
	k := redKey{route, destination}
	if s, ok := old[k][identity]; ok {
		return s
	}
	if r.n >= r.max {
		return r.overStat
	}
	id := identity
	next := make(map[redKey]map[string]*REDStats, len(old)+1)
	for kk, v := range old {
		next[kk] = v
	}
	ids := make(map[string]*REDStats, len(old[k])+1)
	for kk, v := range old[k] {
		ids[kk] = v
	}
	s := r.newStats(route, destination, id)
	ids[id] = s
	next[k] = ids
	r.n++
	r.table.Store(&next)
	return s
}

// Observe counts one response. It is safe for concurrent use and does not
// allocate.
func (s *REDStats) Observe(status int, d time.Duration) {
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	s.codes[class].Inc()
	s.duration.Observe(d.Seconds())
	if s.overflow != nil {
		s.overflow.Inc()
	}
}
