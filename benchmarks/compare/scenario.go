package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"text/template"
)

// scenario is one way of reaching the upstream: directly, or through one
// proxy.
type scenario struct {
	name  string // identifier used by -scenarios and in results.json
	label string // name in tables and the plot
	// config names the template under peers/ that configures the proxy, or
	// is empty when the proxy takes flags only.
	config string
	// argv returns the command that runs the proxy, given the rendered
	// config file (if any) and the fields it was rendered with. Nil for
	// the direct scenario.
	argv func(r *runner, cfgPath string, f peerFields) []string
	// env returns extra environment for the proxy, or nil.
	env func(f peerFields) []string
	// missing returns why the scenario cannot run on this machine, or "".
	missing func(r *runner) string
}

// peerFields fill the templates under peers/.
type peerFields struct {
	Listen     string // host:port the proxy listens on
	ListenHost string // host part of Listen
	Upstream   string // host:port of the upstream
	Admin      string // host:port for an admin endpoint, where the peer has one
	Dir        string // scratch directory for this proxy instance
}

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
			return fmt.Sprintf("%s binary not found in %s", name, r.opt.binDir)
		}
		return ""
	}
}

// scenarios lists every scenario in the order of the tables.
func scenarios() []scenario {
	return []scenario{
		{
			name:    "direct",
			label:   "direct (no proxy)",
			missing: needBuilt("upstream"),
		},
		{
			name:  "forwarder",
			label: "bare fasthttp forwarder",
			argv: func(r *runner, _ string, f peerFields) []string {
				return []string{r.binPath("forwarder"), "-addr", f.Listen, "-upstream", f.Upstream}
			},
			missing: needBuilt("forwarder"),
		},
		{
			name:   "wasmgate",
			label:  "wasmgate",
			config: "wasmgate.yaml",
			argv: func(r *runner, cfg string, _ peerFields) []string {
				return []string{r.binPath("wasmgate"), "run", "-c", cfg}
			},
			missing: needBuilt("wasmgate"),
		},
		{
			name:   "nginx",
			label:  "nginx",
			config: "nginx.conf",
			argv: func(_ *runner, cfg string, f peerFields) []string {
				return []string{"nginx", "-p", f.Dir, "-c", cfg, "-e", filepath.Join(f.Dir, "nginx-error.log")}
			},
			missing: needBinary("nginx"),
		},
		{
			name:   "haproxy",
			label:  "HAProxy",
			config: "haproxy.cfg",
			argv: func(_ *runner, cfg string, _ peerFields) []string {
				return []string{"haproxy", "-db", "-f", cfg}
			},
			missing: needBinary("haproxy"),
		},
		{
			name:   "caddy",
			label:  "Caddy",
			config: "Caddyfile",
			argv: func(_ *runner, cfg string, _ peerFields) []string {
				return []string{"caddy", "run", "--config", cfg, "--adapter", "caddyfile"}
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
