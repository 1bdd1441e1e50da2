package wasm

import (
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// hostMetrics are the host's own metrics about plugins.
type hostMetrics struct {
	reg            prometheus.Registerer
	collectors     []prometheus.Collector
	failures       *prometheus.CounterVec
	replacements   *prometheus.CounterVec
	failedRequests *prometheus.CounterVec
	httpCalls      *prometheus.CounterVec
	instances      *prometheus.GaugeVec
	compileSeconds *prometheus.GaugeVec
	backoff        *prometheus.GaugeVec
	backoffs       *prometheus.CounterVec
	grown          *prometheus.CounterVec
	retired        *prometheus.CounterVec
}

func newHostMetrics(reg prometheus.Registerer, guest *metricStore) (*hostMetrics, error) {
	h := &hostMetrics{
		reg: reg,
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_wasm_instance_failures_total",
			Help: "Calls into a plugin instance that failed and broke it, by kind (trap, timeout, abort, exit, host_panic).",
		}, []string{"plugin", "kind"}),
		replacements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_wasm_instance_replacements_total",
			Help: "Broken plugin instances replaced by new ones.",
		}, []string{"plugin"}),
		failedRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_wasm_failed_requests_total",
			Help: "Requests whose plugin failed, by the failure policy applied.",
		}, []string{"plugin", "policy"}),
		httpCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_wasm_http_calls_total",
			Help: "HTTP calls made by plugins, by result (ok, error, denied).",
		}, []string{"plugin", "result"}),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasmgate_wasm_instances",
			Help: "Live plugin instances.",
		}, []string{"plugin"}),
		compileSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasmgate_wasm_compile_seconds",
			Help: "Time the last start of a plugin spent compiling its module (or loading it from the cache).",
		}, []string{"plugin"}),
		backoff: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasmgate_wasm_rebuild_backoff_seconds",
			Help: "Delay before the next rebuild of a plugin whose instances keep failing; 0 when it is healthy.",
		}, []string{"plugin"}),
		backoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_wasm_rebuild_backoffs_total",
			Help: "Rebuilds of a plugin instance that were delayed because the plugin kept failing.",
		}, []string{"plugin"}),
		grown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_wasm_instances_grown_total",
			Help: "Instances added to a plugin's pool because every instance was busy.",
		}, []string{"plugin"}),
		retired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmgate_wasm_instances_retired_total",
			Help: "Instances removed from a plugin's pool after staying idle.",
		}, []string{"plugin"}),
	}
	h.collectors = []prometheus.Collector{h.failures, h.replacements, h.failedRequests,
		h.httpCalls, h.instances, h.compileSeconds, h.backoff, h.backoffs, h.grown, h.retired, guest}
	if reg == nil {
		return h, nil
	}
	for i, c := range h.collectors {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				h.collectors[i] = nil
				continue
			}
			h.unregister()
			return nil, err
		}
	}
	return h, nil
}

func (h *hostMetrics) unregister() {
	if h.reg == nil {
		return
	}
	for _, c := range h.collectors {
		if c != nil {
			h.reg.Unregister(c)
		}
	}
}

// metricStore holds the metrics plugins define. A metric is named by its
// plugin, kind, name and the plugin's stats_tags, so the instances of a
// plugin, and the plugin after a reload, share it. Ids index a
// copy-on-write list, so updates take no lock.
type metricStore struct {
	mu    sync.Mutex
	byKey map[metricKey]uint32
	list  atomic.Pointer[[]*guestMetric]
	// labelSets holds the label keys of each exported name, joined by
	// commas, to keep every metric family consistent.
	labelSets map[string]string
	// current is the stats_tags signature of each plugin of the live
	// configuration: a metric defined under other stats_tags is no longer
	// exported.
	current map[string]string
}

type metricKey struct {
	plugin, name string
	kind         abi.MetricType
	tags         string // the plugin's stats_tags signature
}

type guestMetric struct {
	plugin, name string
	tags         *tagger
	// fqName, labels and values are the exported name and labels, from
	// the name and the plugin's stats_tags; guarded by metricStore.mu.
	fqName         string
	labels, values []string
	kind           abi.MetricType
	value          atomic.Int64 // counter (as uint64 bits) or gauge
	hist           *histogram
}

// histogramBounds are the buckets of guest histograms, in the unit the
// guest records (Envoy's defaults, usually milliseconds).
var histogramBounds = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
	10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

type histogram struct {
	counts [20]atomic.Uint64 // one per bound, then +Inf
	count  atomic.Uint64
	sum    atomic.Uint64
}

func newMetricStore() *metricStore {
	s := &metricStore{byKey: make(map[metricKey]uint32), current: make(map[string]string)}
	empty := []*guestMetric{}
	s.list.Store(&empty)
	return s
}

// define returns the id of a metric, creating it on first use. Ids start
// at 1; the kind is kept in the id's low two bits, as Envoy does.
func (s *metricStore) define(plugin string, kind abi.MetricType, name string, tags *tagger) uint32 {
	k := metricKey{plugin, name, kind, tags.signature()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.byKey[k]; ok {
		return id
	}
	old := *s.list.Load()
	m := &guestMetric{plugin: plugin, name: name, tags: tags, kind: kind}
	m.fqName, m.labels, m.values = s.labelled(name, tags)
	if kind == abi.MetricHistogram {
		m.hist = &histogram{}
	}
	next := append(append([]*guestMetric(nil), old...), m)
	s.list.Store(&next)
	id := uint32(len(next))<<2 | uint32(kind)
	s.byKey[k] = id
	return id
}

func (s *metricStore) get(id uint32) *guestMetric {
	list := *s.list.Load()
	i := int(id >> 2)
	if i < 1 || i > len(list) {
		return nil
	}
	m := list[i-1]
	if uint32(m.kind) != id&3 {
		return nil
	}
	return m
}

// labelled splits a metric name into a Prometheus name and labels: first
// by the plugin's stats_tags, then by the conventions filters use without
// them, Envoy's Wasm stats convention ("base.key=.=value;.;") or
// "base;key=value;key=value". Every metric of one name must carry the
// same label keys, or a scrape would fail: a name whose keys differ from
// the first seen under it, or that is malformed, is exported whole,
// without labels. s.mu must be held.
func (s *metricStore) labelled(name string, tags *tagger) (fqName string, labels, values []string) {
	if s.labelSets == nil {
		s.labelSets = map[string]string{}
	}
	base, pairs := tags.extract(name)
	if b, more, ok := envoyTags(base); ok {
		base, pairs = b, append(pairs, more...)
	} else if b, rest, found := strings.Cut(base, ";"); found {
		base, pairs = b, append(pairs, strings.Split(rest, ";")...)
	}
	if len(pairs) > 0 {
		return s.withLabels(name, base, pairs)
	}
	fqName = promName(base)
	if prev, ok := s.labelSets[fqName]; ok && prev != "" {
		return fqName + "_unlabelled", nil, nil
	}
	s.labelSets[fqName] = ""
	return fqName, nil, nil
}

// exported reports whether m is defined under the stats_tags its plugin
// has in the live configuration (or its plugin is in none). s.mu must be
// held.
func (s *metricStore) exported(m *guestMetric) bool {
	cur, ok := s.current[m.plugin]
	return !ok || cur == m.tags.signature()
}

// activate records the stats_tags signature of each plugin of the
// configuration now live. When one changed, metrics are named again, in
// the order they were defined, so that the families exported are those
// of the tags in force; those defined under other tags are no longer
// exported.
func (s *metricStore) activate(sigs map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for plugin, sig := range sigs {
		if cur, ok := s.current[plugin]; !ok || cur != sig {
			s.current[plugin] = sig
			changed = true
		}
	}
	if !changed {
		return
	}
	s.labelSets = map[string]string{}
	for _, m := range *s.list.Load() {
		if s.exported(m) {
			m.fqName, m.labels, m.values = s.labelled(m.name, m.tags)
		}
	}
}

// envoyTags splits a name written with the tag-extraction convention of
// Envoy's Wasm stats (Istio's stats_tags regexes): "base.key=.=value;.;"
// repeated, as in "istio_requests_total.reporter=.=destination;.;". It
// returns the base and "key=value" pairs.
func envoyTags(name string) (base string, pairs []string, ok bool) {
	i := strings.Index(name, "=.=")
	if i < 0 {
		return "", nil, false
	}
	j := strings.LastIndexByte(name[:i], '.')
	if j <= 0 {
		return "", nil, false
	}
	rest := strings.TrimSuffix(name[j+1:], ";.;")
	for _, t := range strings.Split(rest, ";.;") {
		k, v, found := strings.Cut(t, "=.=")
		if !found {
			return "", nil, false
		}
		pairs = append(pairs, k+"="+v)
	}
	return name[:j], pairs, true
}

// withLabels exports base with the labels of "key=value" pairs, or the
// whole name without labels when a key is malformed or the keys differ
// from the first seen under base.
func (s *metricStore) withLabels(name, base string, pairs []string) (fqName string, labels, values []string) {
	fqName = promName(base)
	for _, pair := range pairs {
		k, v, ok := strings.Cut(pair, "=")
		k = config.PromLabel(k)
		if !ok || k == "" || k == "plugin" || slices.Contains(labels, k) {
			return promName(name), nil, nil
		}
		labels, values = append(labels, k), append(values, v)
	}
	sig := strings.Join(labels, ",")
	if prev, ok := s.labelSets[fqName]; ok && prev != sig {
		return promName(name), nil, nil
	}
	s.labelSets[fqName] = sig
	return fqName, labels, values
}

// promName turns a guest's metric name into a Prometheus one.
func promName(name string) string {
	var b strings.Builder
	b.WriteString("wasm_")
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == ':':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// Describe implements prometheus.Collector. Guest metrics appear at run
// time, so the collector is unchecked.
func (s *metricStore) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (s *metricStore) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range *s.list.Load() {
		if !s.exported(m) {
			continue
		}
		desc := prometheus.NewDesc(m.fqName, "Defined by a wasm plugin.", append([]string{"plugin"}, m.labels...), nil)
		lv := append([]string{m.plugin}, m.values...)
		var pm prometheus.Metric
		var err error
		switch m.kind {
		case abi.MetricCounter:
			pm, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, float64(uint64(m.value.Load())), lv...)
		case abi.MetricGauge:
			pm, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, float64(m.value.Load()), lv...)
		case abi.MetricHistogram:
			buckets := make(map[float64]uint64, len(histogramBounds))
			var cum uint64
			for i, b := range histogramBounds {
				cum += m.hist.counts[i].Load()
				buckets[b] = cum
			}
			pm, err = prometheus.NewConstHistogram(desc, m.hist.count.Load(),
				float64(m.hist.sum.Load()), buckets, lv...)
		}
		if err == nil {
			ch <- pm
		}
	}
}

func hostDefineMetric(in *instance, a []uint64) abi.Status {
	kind := abi.MetricType(u32(a[0]))
	if kind > abi.MetricHistogram {
		return abi.StatusBadArgument
	}
	name, ok := in.mem.Read(u32(a[1]), u32(a[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	if len(name) == 0 {
		return abi.StatusBadArgument
	}
	var tags *tagger
	if in.curP != nil {
		tags = in.curP.tags
	}
	id := in.vm.m.guest.define(in.pluginName(), kind, string(name), tags)
	if !in.mem.WriteUint32Le(u32(a[3]), id) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hostIncrementMetric(in *instance, a []uint64) abi.Status {
	m := in.vm.m.guest.get(u32(a[0]))
	if m == nil {
		return abi.StatusNotFound
	}
	delta := int64(a[1])
	switch m.kind {
	case abi.MetricCounter:
		// As Envoy: a counter only goes up, by at least 1.
		if delta <= 0 {
			return abi.StatusBadArgument
		}
		m.value.Add(delta)
	case abi.MetricGauge:
		m.value.Add(delta)
	default:
		return abi.StatusBadArgument
	}
	return abi.StatusOK
}

func hostRecordMetric(in *instance, a []uint64) abi.Status {
	m := in.vm.m.guest.get(u32(a[0]))
	if m == nil {
		return abi.StatusNotFound
	}
	v := a[1]
	switch m.kind {
	case abi.MetricCounter:
		// Envoy adds a recorded value to a counter; a gauge takes it.
		m.value.Add(int64(v))
	case abi.MetricGauge:
		m.value.Store(int64(v))
	case abi.MetricHistogram:
		h := m.hist
		i := len(histogramBounds)
		f := float64(v)
		for j, b := range histogramBounds {
			if f <= b {
				i = j
				break
			}
		}
		h.counts[i].Add(1)
		h.count.Add(1)
		if v <= math.MaxUint64-h.sum.Load() {
			h.sum.Add(v)
		}
	}
	return abi.StatusOK
}

func hostGetMetric(in *instance, a []uint64) abi.Status {
	m := in.vm.m.guest.get(u32(a[0]))
	if m == nil {
		return abi.StatusNotFound
	}
	var v uint64
	switch m.kind {
	case abi.MetricCounter, abi.MetricGauge:
		v = uint64(m.value.Load())
	default:
		// As Envoy: a histogram has no single value to read.
		return abi.StatusBadArgument
	}
	if !in.mem.WriteUint64Le(u32(a[1]), v) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}
