package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.yaml.in/yaml/v3"

	"github.com/wasmgate/wasmgate/proxy/cluster"
)

// ReadyCheck reports whether the proxy should take traffic, and why not;
// a check may also give a reason while ready, shown on /ready as a note.
type ReadyCheck func() (ready bool, reason string)

// Admin serves the operator's endpoints: /ready, /healthz, /metrics,
// /config and /clusters.
type Admin struct {
	srv      *Server
	draining atomic.Bool
	checks   []ReadyCheck
}

// NewAdmin returns the admin endpoints of s. /ready answers 200 once s has
// a configuration and each check passes.
func NewAdmin(s *Server, checks ...ReadyCheck) *Admin {
	hasConfig := func() (bool, string) {
		if s.Snapshot() == nil {
			return false, "no configuration yet"
		}
		return true, ""
	}
	return &Admin{srv: s, checks: append([]ReadyCheck{hasConfig}, checks...)}
}

// SetDraining makes /ready fail, so that load balancers stop sending
// traffic before the listeners close.
func (a *Admin) SetDraining() { a.draining.Store(true) }

// Handler returns the admin HTTP handler.
func (a *Admin) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/ready", a.ready)
	mux.Handle("/metrics", promhttp.HandlerFor(a.srv.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/config", a.config)
	// Go's profiler, for the operator: the admin listener is loopback
	// unless configured otherwise.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/clusters", a.clusters)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("wasmgate admin: /ready /healthz /metrics /config /clusters /debug/pprof/\n"))
	})
	return mux
}

func (a *Admin) ready(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	switch {
	case a.draining.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("draining\n"))
		return
	}
	var notes string
	for _, check := range a.checks {
		ok, reason := check()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(reason + "\n"))
			return
		}
		if reason != "" {
			notes += "; " + reason
		}
	}
	_, _ = w.Write([]byte("ready" + notes + "\n"))
}

func (a *Admin) config(w http.ResponseWriter, r *http.Request) {
	snap := a.srv.Snapshot()
	if snap == nil {
		http.Error(w, "no configuration yet", http.StatusServiceUnavailable)
		return
	}
	doc := struct {
		Version  string    `yaml:"version" json:"version"`
		LoadedAt time.Time `yaml:"loaded_at" json:"loaded_at"`
		Config   any       `yaml:"config" json:"config"`
	}{snap.Version, snap.LoadedAt, snap.Config}
	if r.URL.Query().Get("format") == "yaml" {
		w.Header().Set("Content-Type", "application/yaml")
		_ = yaml.NewEncoder(w).Encode(doc)
		return
	}
	writeJSON(w, doc)
}

// EndpointStatus is one endpoint as /clusters shows it.
type EndpointStatus struct {
	Address        string `json:"address"`
	Weight         int    `json:"weight"`
	ActiveRequests int64  `json:"active_requests"`
	Connections    int    `json:"connections"`
	Requests       uint64 `json:"requests"`
	// Health says whether the endpoint takes traffic and why not: health
	// checks, outlier ejection (until when, how many times).
	cluster.EndpointHealth
}

// ClusterStatus is one cluster as /clusters shows it.
type ClusterStatus struct {
	Name      string           `json:"name"`
	LBPolicy  string           `json:"lb_policy"`
	Endpoints []EndpointStatus `json:"endpoints"`
	// Panic is true when too few endpoints are healthy and requests go
	// to all of them.
	Panic bool `json:"panic"`
	// Breakers are the counters the circuit breakers bound.
	Breakers cluster.BreakerCounts `json:"breakers"`
}

func (a *Admin) clusters(w http.ResponseWriter, _ *http.Request) {
	snap := a.srv.Snapshot()
	if snap == nil {
		http.Error(w, "no configuration yet", http.StatusServiceUnavailable)
		return
	}
	out := make([]ClusterStatus, 0, len(snap.Clusters))
	for _, c := range snap.Clusters {
		cs := ClusterStatus{Name: c.Name, LBPolicy: c.Config().LBPolicy, Endpoints: []EndpointStatus{},
			Panic: c.Panicking(), Breakers: c.Breakers()}
		for _, e := range c.Endpoints() {
			cs.Endpoints = append(cs.Endpoints, EndpointStatus{
				Address: e.Addr, Weight: e.Weight(), ActiveRequests: e.ActiveRequests(),
				Connections: e.Conns(), Requests: e.Requests(), EndpointHealth: e.Health(),
			})
		}
		out = append(out, cs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, map[string]any{"version": snap.Version, "clusters": out})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
