package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"text/template"
)

// scenario is one way of reaching the upstream: directly, or through one
// proxy, over one protocol.
type scenario struct {
	name  string // identifier used by -scenarios and in results.json
	label string // name in tables and the plot
	group string // the table it belongs to: one of groups
	// peer is the proxy ("wasmgate", "nginx", ...), or empty for direct.
	peer string
	// base names the scenario of the same group the ratio column compares
	// to, or is empty.
	base string
	// config names the template under peers/ that configures the proxy, or
	// is empty when the proxy takes flags only.
	config string
	// argv returns the command that runs the proxy, given the rendered
	// config file (if any) and the fields it was rendered with. Nil for
	// the direct scenario. A pair of proxies (the mesh group) runs as one
	// shell whose process group holds both.
	argv func(ctx context.Context, r *runner, cfgPath string, f peerFields) ([]string, error)
	// host, when set, is the Host header of every request: the mesh
	// group's client calls the service by name.
	host string
	// env returns extra environment for the proxy, or nil.
	env func(f peerFields) []string
	// missing returns why the scenario cannot run on this machine, or "".
	missing func(r *runner) string

	// load is how requests are sent: loadWrk, loadWrkTLS, loadH2 or loadH3.
	load string
	// http3 has the proxy serve HTTP/3 as well (Caddy and wasmgate).
	http3 bool
	// filters are the Wasm filters on wasmgate's route, in order.
	filters []string
	// oneVM runs the filters from the module holding the three
	// first-party filters, in one VM (vm_id), each selected by its
	// root_id: the way `wasmgate up` ships them.
	oneVM bool
	// reload has the configuration rewritten during the run.
	reload bool
}

// Load generators and protocols.
const (
	loadWrk    = "wrk"     // HTTP/1.1, cleartext
	loadWrkTLS = "wrk-tls" // HTTP/1.1 over TLS
	loadH2     = "h2load"  // HTTP/2 over TLS
	loadH3     = "h3"      // HTTP/3, wasmgate bench
)

// Scenario groups, in the order of the report.
const (
	groupHTTP1   = "http1"
	groupFilters = "filters"
	groupHTTPS   = "https"
	groupH3      = "h3"
	groupReload  = "reload"
)

var groups = []string{groupHTTP1, groupFilters, groupHTTPS, groupH3, groupReload, groupMesh}

// tls reports whether the proxy listens with TLS.
func (s scenario) tls() bool { return s.load != loadWrk && s.load != "" }

// peerFields fill the templates under peers/.
type peerFields struct {
	Listen     string // host:port the proxy listens on
	ListenHost string // host part of Listen
	Upstream   string // host:port of the upstream
	Admin      string // host:port for an admin endpoint, where the peer has one
	Dir        string // scratch directory for this proxy instance
	// TLS, when set, has the proxy terminate TLS with this certificate.
	TLS *certFiles
	// HTTP3 has the proxy serve HTTP/3 too (needs TLS).
	HTTP3 bool
	// Plugins are wasmgate's Wasm filters, attached to the route in order.
	Plugins []pluginSpec
	// Route is the name of wasmgate's route ("all"); the reload scenario
	// alternates between two names.
	Route string
	// Mutual, for the nginx pair of the mesh group, is its mutual TLS.
	Mutual *mutualFiles
}

// fields completes f, which holds the addresses and the directory, for s:
// the certificate when s serves TLS, HTTP/3, and its filters, whose
// modules are in binDir.
func (s scenario) fields(f peerFields, cert *certFiles, binDir string) peerFields {
	f.Route, f.HTTP3 = "all", s.http3
	if s.tls() {
		f.TLS = cert
	}
	for _, name := range s.filters {
		p := pluginSpec{Name: name, File: filepath.Join(binDir, name+".wasm"), Config: filterConfigs[name]}
		if s.oneVM {
			p.File, p.VMID, p.RootID = filepath.Join(binDir, firstPartyModule), "firstparty", name
		}
		f.Plugins = append(f.Plugins, p)
	}
	return f
}

// firstPartyModule is the module holding the three first-party filters.
const firstPartyModule = "firstparty.wasm"

// pluginSpec is one Wasm filter in wasmgate's configuration.
type pluginSpec struct {
	Name   string
	File   string
	Config string // JSON, which is YAML too
	// VMID and RootID, when set, are the plugin's vm_id and root_id.
	VMID, RootID string
}

// filterConfigs are the configurations of the filters the filters group
// measures. Every request of that group carries filterHeader, which the
// encryption filter seals.
var filterConfigs = map[string]string{
	// The smallest Go filter: sets x-hello on the request.
	"hello": `{"greeting": "hi"}`,
	// No JWT configured: every request is anonymous, and allowed by a rule.
	"authz": `{"rules": [{"name": "anonymous", "action": "allow", "principals": [""]}], "default": "deny"}`,
	// No transport requirement; one request header sealed with AES-256-GCM.
	"encryption": `{"default": {"require": "none"}, "keys": {"k1": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, "active_key": "k1", "encrypt_headers": ["x-secret"]}`,
	// One trace in ten sampled, no collector: spans are not exported.
	"telemetry": `{"sample_rate": 0.1}`,
}

// filterHeader is sent with every request of the filters group.
const filterHeader = "x-secret: 4111-1111-1111-1111"

func needBinary(name string) func(*runner) string {
	return func(*runner) string {
		if _, err := exec.LookPath(name); err != nil {
			return name + " is not installed"
		}
		return ""
	}
}

func needBuilt(name string) func(*runner) string {
	return func(r *runner) string {
		if _, err := os.Stat(r.binPath(name)); err != nil {
			return fmt.Sprintf("%s not found in %s", name, r.opt.binDir)
		}
		return ""
	}
}

// needAll returns the first reason any of checks gives.
func needAll(checks ...func(*runner) string) func(*runner) string {
	return func(r *runner) string {
		for _, c := range checks {
			if why := c(r); why != "" {
				return why
			}
		}
		return ""
	}
}

// peers returns each proxy's scenario in the HTTP/1.1 group; the other
// groups derive theirs from it.
func peers() map[string]scenario {
	return map[string]scenario{
		"forwarder": {
			name:  "forwarder",
			label: "bare fasthttp forwarder",
			argv: func(_ context.Context, r *runner, _ string, f peerFields) ([]string, error) {
				return []string{r.binPath("forwarder"), "-addr", f.Listen, "-upstream", f.Upstream}, nil
			},
			missing: needBuilt("forwarder"),
		},
		"wasmgate": {
			name:   "wasmgate",
			label:  "wasmgate",
			config: "wasmgate.yaml",
			argv: func(_ context.Context, r *runner, cfg string, _ peerFields) ([]string, error) {
				return []string{r.binPath("wasmgate"), "run", "-c", cfg}, nil
			},
			missing: needBuilt("wasmgate"),
		},
		"nginx": {
			name:   "nginx",
			label:  "nginx",
			config: "nginx.conf",
			argv: func(_ context.Context, _ *runner, cfg string, f peerFields) ([]string, error) {
				return []string{"nginx", "-p", f.Dir, "-c", cfg, "-e", filepath.Join(f.Dir, "nginx-error.log")}, nil
			},
			missing: needBinary("nginx"),
		},
		"haproxy": {
			name:   "haproxy",
			label:  "HAProxy",
			config: "haproxy.cfg",
			argv: func(_ context.Context, _ *runner, cfg string, _ peerFields) ([]string, error) {
				return []string{"haproxy", "-db", "-f", cfg}, nil
			},
			missing: needBinary("haproxy"),
		},
		"caddy": {
			name:   "caddy",
			label:  "Caddy",
			config: "Caddyfile",
			argv: func(_ context.Context, _ *runner, cfg string, _ peerFields) ([]string, error) {
				return []string{"caddy", "run", "--config", cfg, "--adapter", "caddyfile"}, nil
			},
			// Caddy keeps state under $HOME and the XDG directories even
			// with automatic HTTPS off: keep it inside the scratch directory.
			env: func(f peerFields) []string {
				return []string{
					"HOME=" + f.Dir,
					"XDG_DATA_HOME=" + filepath.Join(f.Dir, "data"),
					"XDG_CONFIG_HOME=" + filepath.Join(f.Dir, "config"),
				}
			},
			missing: needBinary("caddy"),
		},
	}
}

// tlsConfigs names each peer's template for TLS listeners. wasmgate's one
// template covers every case.
var tlsConfigs = map[string]string{
	"wasmgate": "wasmgate.yaml",
	"nginx":    "nginx-tls.conf",
	"haproxy":  "haproxy-tls.cfg",
	"caddy":    "Caddyfile-tls",
}

// scenarios lists every scenario in the order of the tables.
func scenarios() []scenario {
	p := peers()
	out := []scenario{{
		name:    "direct",
		label:   "direct (no proxy)",
		group:   groupHTTP1,
		load:    loadWrk,
		missing: needBuilt("upstream"),
	}}
	for _, name := range []string{"forwarder", "wasmgate", "nginx", "haproxy", "caddy"} {
		s := p[name]
		s.group, s.peer, s.load = groupHTTP1, name, loadWrk
		out = append(out, s)
	}

	// Filters: wasmgate, the same route, with and without Wasm filters.
	// A single filter runs from its own module; the three chained run
	// as `wasmgate up` ships them, from one module in one VM.
	filterSets := []struct {
		name, label string
		filters     []string
		oneVM       bool
	}{
		{"none", "no filter", nil, false},
		{"hello", "hello (minimal Go filter)", []string{"hello"}, false},
		{"authz", "authz", []string{"authz"}, false},
		{"encryption", "encryption", []string{"encryption"}, false},
		{"telemetry", "telemetry", []string{"telemetry"}, false},
		{"chain", "telemetry + authz + encryption (one VM)", []string{"telemetry", "authz", "encryption"}, true},
	}
	for _, fs := range filterSets {
		s := p["wasmgate"]
		s.name, s.label, s.group, s.peer, s.load = "filter-"+fs.name, fs.label, groupFilters, "wasmgate", loadWrk
		s.filters, s.oneVM, s.base = fs.filters, fs.oneVM, "filter-none"
		checks := []func(*runner) string{s.missing}
		for _, f := range fs.filters {
			if fs.oneVM {
				f = "firstparty"
			}
			checks = append(checks, needBuilt(f+".wasm"))
		}
		s.missing = needAll(checks...)
		out = append(out, s)
	}

	// HTTPS: HTTP/1.1 over TLS with wrk, then HTTP/2 over TLS with h2load,
	// for every peer that terminates TLS.
	for _, proto := range []struct{ prefix, load, what string }{
		{"https", loadWrkTLS, "HTTP/1.1 + TLS"},
		{"h2", loadH2, "HTTP/2 + TLS"},
	} {
		for _, name := range []string{"wasmgate", "nginx", "haproxy", "caddy"} {
			s := p[name]
			s.name, s.label = proto.prefix+"-"+name, s.label+", "+proto.what
			s.group, s.peer, s.load, s.config = groupHTTPS, name, proto.load, tlsConfigs[name]
			s.base = proto.prefix + "-nginx"
			if proto.load == loadH2 {
				s.missing = needAll(s.missing, needBinary("h2load"))
			}
			out = append(out, s)
		}
	}

	// HTTP/3: the two quic-go proxies.
	for _, name := range []string{"wasmgate", "caddy"} {
		s := p[name]
		s.name, s.label = "h3-"+name, s.label+", HTTP/3"
		s.group, s.peer, s.load, s.config, s.http3 = groupH3, name, loadH3, tlsConfigs[name], true
		s.base = "h3-caddy"
		s.missing = needAll(s.missing, needBuilt("wasmgate"))
		out = append(out, s)
	}

	// Reload: wasmgate with its configuration rewritten every 100 ms,
	// beside the same without.
	for _, rl := range []struct {
		name, label string
		reload      bool
	}{
		{"reload-off", "wasmgate, no reload", false},
		{"reload-on", "wasmgate, config rewritten every 100 ms", true},
	} {
		s := p["wasmgate"]
		s.name, s.label, s.group, s.peer, s.load, s.reload = rl.name, rl.label, groupReload, "wasmgate", loadWrk, rl.reload
		s.base = "reload-off"
		out = append(out, s)
	}

	// Mesh: one request through two proxies in a row (mesh.go).
	return addMeshScenarios(out)
}

// renderConfig renders peers/<name> into dir and returns the path written.
func renderConfig(peersDir, name, dir string, f peerFields) (string, error) {
	src := filepath.Join(peersDir, name)
	tmpl, err := template.New(name).Option("missingkey=error").ParseFiles(src)
	if err != nil {
		return "", fmt.Errorf("parsing %s: %w", src, err)
	}
	dst := filepath.Join(dir, name)
	out, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	if err := tmpl.Execute(out, f); err != nil {
		out.Close()
		return "", fmt.Errorf("rendering %s: %w", src, err)
	}
	return dst, out.Close()
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// freeDualAddr returns a loopback address whose port was free a moment ago
// for both TCP and UDP, for a proxy that serves HTTP/3 beside TCP.
func freeDualAddr() (string, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr, nil
		}
	}
	return "", fmt.Errorf("no port free for both TCP and UDP")
}
