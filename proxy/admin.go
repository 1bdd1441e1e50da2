package proxy

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.yaml.in/yaml/v3"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/config/redact"
	"github.com/wasmgate/wasmgate/proxy/cluster"
)

// ReadyCheck reports whether the proxy should take traffic, and why not;
// a check may also give a reason while ready, shown on /ready as a note.
type ReadyCheck func() (ready bool, reason string)

// Admin serves the operator's endpoints: /ready, /healthz, /metrics,
// /config and /clusters, and Go's profiler under /debug/pprof/ when the
// configuration's admin.pprof says so.
//
// Only /healthz and /ready, which tell nothing, answer every request. The
// others answer only requests whose Host is an IP address, localhost or
// one of admin.allowed_hosts (a web page that points a name of its own at
// this host cannot read them), and that carry the token of
// admin.token_file when there is one. /config hides the configuration's
// secrets (package redact). Until the first configuration, the defaults
// hold: no other host, no profiler, no token.
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
	open := http.NewServeMux()
	open.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	open.HandleFunc("/ready", a.ready)

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.srv.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/config", a.config)
	mux.HandleFunc("/debug/pprof/", a.pprof(pprof.Index))
	mux.HandleFunc("/debug/pprof/profile", a.pprof(pprof.Profile))
	mux.HandleFunc("/debug/pprof/trace", a.pprof(pprof.Trace))
	mux.HandleFunc("/clusters", a.clusters)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		page := "wasmgate admin: /ready /healthz /metrics /config /clusters"
		if a.options().Pprof {
			page += " /debug/pprof/"
		}
		_, _ = w.Write([]byte(page + "\n"))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/ready" {
			open.ServeHTTP(w, r)
			return
		}
		opts := a.options()
		if !hostAllowed(r.Host, opts.AllowedHosts) {
			http.Error(w, "host not allowed: name it in admin.allowed_hosts", http.StatusForbidden)
			return
		}
		if opts.TokenFile != "" {
			if status, msg := checkToken(r, opts.TokenFile); status != 0 {
				if status == http.StatusUnauthorized {
					w.Header().Set("WWW-Authenticate", `Bearer realm="wasmgate admin"`)
				}
				http.Error(w, msg, status)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// options are the admin settings of the live configuration.
func (a *Admin) options() config.Admin {
	if snap := a.srv.Snapshot(); snap != nil && snap.Config != nil {
		return snap.Config.Admin
	}
	return config.Admin{}
}

// pprof serves h when the configuration turns the profiler on.
func (a *Admin) pprof(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.options().Pprof {
			http.Error(w, "the profiler is off: set admin.pprof", http.StatusNotFound)
			return
		}
		h(w, r)
	}
}

// hostAllowed reports whether the admin endpoints answer a request for
// host (a Host header, with or without a port): an IP address, localhost
// (or a name under .localhost), or one of allowed, which may name a port.
func hostAllowed(host string, allowed []string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		return true
	}
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	for _, a := range allowed {
		a = strings.ToLower(a)
		if a == name || a == strings.ToLower(host) {
			return true
		}
	}
	return false
}

// checkToken compares the request's bearer token with the file's, in
// constant time. It returns 0 when they match, else the status and message
// to answer: 401 for a missing or wrong token, 503 when the file gives
// none.
func checkToken(r *http.Request, file string) (int, string) {
	want, err := os.ReadFile(file)
	want = bytes.TrimSpace(want)
	if err != nil || len(want) == 0 {
		return http.StatusServiceUnavailable, "the admin token file cannot be read"
	}
	auth := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(auth) <= len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return http.StatusUnauthorized, "an admin token is required"
	}
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(auth[len(prefix):])), want) != 1 {
		return http.StatusUnauthorized, "wrong admin token"
	}
	return 0, ""
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
	}{snap.Version, snap.LoadedAt, redact.Config(snap.Config)}
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
