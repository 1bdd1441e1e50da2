package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
)

// TestCtlIgnoresDefaults: a bundle that leaves defaults out and the same
// bundle with them written in are one configuration to `ctl diff` and
// `ctl apply`, whichever was applied first.
func TestCtlIgnoresDefaults(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, "controlplane", "--data-dir", filepath.Join(dir, "cp"), "--listen", "127.0.0.1:0",
		"--etcd-listen-client", "127.0.0.1:0", "--etcd-listen-peer", "127.0.0.1:0", "--admin-token", "a-test-token-of-32-characters-xx", "--log-format", "json")
	re := regexp.MustCompile(`(?m)^\{.*"msg":"admin API serving".*"url":"([^"]+)".*\}$`)
	url := p.stderr.wait(t, p, re, 20*time.Second)[1]

	short := filepath.Join(dir, "short.yaml")
	if err := os.WriteFile(short, []byte(`
listeners: [{name: public, address: "127.0.0.1:8080"}]
clusters: [{name: api, endpoints: [{address: "127.0.0.1:9001"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: api}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadFile(short)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Normalize()
	// What is each proxy's own stays out of a bundle.
	cfg.Admin, cfg.AccessLog, cfg.Node, cfg.DrainTimeout, cfg.ShutdownDelay = config.Admin{}, config.AccessLog{}, config.Node{}, 0, 0
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(dir, "long.json")
	if err := os.WriteFile(long, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"lb_policy":"round_robin"`) {
		t.Fatalf("the normalized bundle spells out no default: %s", data)
	}

	ctl := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, append([]string{"ctl", "--server", url, "--token", "a-test-token-of-32-characters-xx"}, args...)...)
		if err != nil {
			t.Fatalf("ctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	for _, order := range [][2]string{{short, long}, {long, short}} {
		ctl("apply", "-f", order[0])
		if out := ctl("diff", "-f", order[1]); !strings.Contains(out, "no differences") {
			t.Errorf("diff %s after applying %s:\n%s", filepath.Base(order[1]), filepath.Base(order[0]), out)
		}
		if out := ctl("apply", "-f", order[1]); !strings.Contains(out, "unchanged") {
			t.Errorf("apply %s after applying %s:\n%s", filepath.Base(order[1]), filepath.Base(order[0]), out)
		}
	}
}

// TestDiffShowsOnlyWhatChanges: a changed route of a long virtual host
// shows as its changed lines with a little context, and empty fields
// (request_headers: {}) never show.
func TestDiffShowsOnlyWhatChanges(t *testing.T) {
	vh := func(body string) *config.VirtualHost {
		v := &config.VirtualHost{Name: "default", Domains: []string{"*"}}
		for i := range 10 {
			v.Routes = append(v.Routes, config.Route{Name: fmt.Sprintf("r%d", i), Match: config.RouteMatch{Prefix: fmt.Sprintf("/r%d/", i)}, Cluster: "demo"})
		}
		v.Routes[5].DirectResponse = &config.DirectResponse{Status: 200, Body: body}
		v.Routes[5].Cluster = ""
		return v
	}
	a, b := vh("ok\n"), vh("changed\n")
	for _, v := range []*config.VirtualHost{a, b} {
		c := &config.Config{VirtualHosts: []config.VirtualHost{*v}}
		c.Normalize()
		*v = c.VirtualHosts[0]
	}
	lines := hunks(lineDiff(splitLines(yamlOf(a)), splitLines(yamlOf(b))), 3)
	out := strings.Join(lines, "\n")
	if strings.Contains(out, "{}") || strings.Contains(yamlOf(a), "{}") {
		t.Errorf("empty fields show:\n%s", yamlOf(a))
	}
	if len(lines) > 12 || !strings.Contains(out, "- ") || !strings.Contains(out, "changed") || !strings.HasPrefix(out, "@@ name: r5\n") {
		t.Errorf("want only the change with a little context:\n%s", out)
	}
}
