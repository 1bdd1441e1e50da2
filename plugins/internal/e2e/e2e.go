// Package e2e runs the first-party plugins inside a whole proxy for their
// end-to-end tests: a proxy.Server on a loopback listener, a wasm.Manager
// whose HTTP calls reach the snapshot's clusters, and a backend that
// echoes what it received.
package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/wasm"
	"github.com/wasmgate/wasmgate/proxy/wasm/wasmtest"
)

// Proxy is a running proxy with plugins.
type Proxy struct {
	URL      string // http://127.0.0.1:port of the listener "main"
	Server   *proxy.Server
	Registry *prometheus.Registry
	Backend  *httptest.Server
}

// Echo is what the backend answers: the request it received. It also
// sends every x-echo-* request header back as a response header.
type Echo struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Host   string      `json:"host"`
	Header http.Header `json:"header"`
}

// Start runs a proxy on the configuration yaml, in which {{backend}}
// stands for the backend's address and {{name}} for each of more. Its
// listener must be named "main" and bind 127.0.0.1:0.
func Start(t *testing.T, yaml string, more map[string]string) *Proxy {
	t.Helper()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		w.Header().Set("x-backend", "1")
		for k, vs := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-echo-") {
				w.Header()[k] = vs
			}
		}
		json.NewEncoder(w).Encode(Echo{r.Method, r.URL.RequestURI(), r.Host, r.Header})
	}))
	t.Cleanup(backend.Close)
	pairs := []string{"{{backend}}", strings.TrimPrefix(backend.URL, "http://")}
	for k, v := range more {
		pairs = append(pairs, "{{"+k+"}}", v)
	}
	text := strings.NewReplacer(pairs...).Replace(yaml)
	cfg, err := config.Parse([]byte(text), t.Name()+".yaml")
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}

	reg := prometheus.NewRegistry()
	// Plugins' HTTP calls reach the live snapshot's clusters: the proxy
	// hands them to the host.
	m, err := wasm.NewHost(wasm.Options{
		CacheDir:   filepath.Join(os.TempDir(), "wasmgate-wasmtest-cache"),
		Logger:     zap.NewNop(),
		Registerer: reg,
		Node:       &filter.Node{ID: "e2e"},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.NewServer(proxy.Options{Plugins: m})
	if err := srv.Apply(context.Background(), cfg, ""); err != nil {
		m.Close()
		t.Fatalf("apply: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		m.Close()
	})
	addr := srv.Addr("main")
	if addr == nil {
		t.Fatal("no listener named main")
	}
	return &Proxy{URL: "http://" + addr.(*net.TCPAddr).String(), Server: srv, Registry: reg, Backend: backend}
}

// Metric returns the value of a metric a plugin defined as name ("base" or
// "base;key=value;..."; a histogram gives its sample count).
func (p *Proxy) Metric(name string) float64 {
	v, _ := wasmtest.GatheredMetric(p.Registry, name)
	return v
}
