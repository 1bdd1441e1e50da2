package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestLoadLocalTelemetry: --local-config gives the telemetry section, and
// a file that sets anything else, or no telemetry, or a bad one, is
// refused with the field named.
func TestLoadLocalTelemetry(t *testing.T) {
	for _, tc := range []struct {
		name, body, err string
	}{
		{"telemetry only", `
telemetry:
  sinks: [{name: f, type: file, file: {path: /tmp/x.log}}]
  event: [f]
`, ""},
		{"listeners", `
listeners: [{name: main, address: "127.0.0.1:8080"}]
telemetry: {sinks: [{name: f, type: stdout}], event: [f]}
`, "listeners: set by the control plane"},
		{"admin", `
admin: {address: "127.0.0.1:9901"}
telemetry: {sinks: [{name: f, type: stdout}], event: [f]}
`, "admin: set by --admin"},
		{"no telemetry", `drain_timeout: 0s
`, "telemetry: missing"},
		{"bad telemetry", `
telemetry: {sinks: [{name: f, type: stdout}], event: [nowhere]}
`, "telemetry.event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "local.yaml")
			if err := os.WriteFile(file, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			tel, err := loadLocalTelemetry(file)
			switch {
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err == "" && (tel == nil || len(tel.Sinks) != 1):
				t.Fatalf("telemetry %+v", tel)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
		})
	}
}

// TestEtcdProxyTelemetryFromLocalConfig runs a control plane and a proxy
// that follows it with --local-config: the proxy's telemetry pipeline has
// the file's sinks, so applying the control plane's configuration writes
// a config_applied event record to the file sink.
func TestEtcdProxyTelemetryFromLocalConfig(t *testing.T) {
	dir := t.TempDir()
	const token = "a-test-token-of-32-characters-xx"
	cp := startProc(t, "controlplane", "--data-dir", filepath.Join(dir, "cp"), "--listen", "127.0.0.1:0",
		"--etcd-listen-client", "127.0.0.1:0", "--etcd-listen-peer", "127.0.0.1:0", "--admin-token", token, "--log-format", "json")
	re := regexp.MustCompile(`(?m)^\{.*"msg":"control plane ready".*"api":"([^"]+)".*"etcd":\["([^"]+)".*\}$`)
	m := cp.stderr.wait(t, cp, re, 20*time.Second)
	api, etcd := m[1], m[2]
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	if out, err := runCLI(t, "ctl", "--server", api, "--token", token, "apply", "-f", write("base.yaml", `
listeners: [{name: public, address: "127.0.0.1:0"}]
clusters: [{name: api, endpoints: [{address: "127.0.0.1:9"}]}]
virtual_hosts: [{name: all, domains: ["*"], routes: [{cluster: api}]}]
`)); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	events := filepath.Join(dir, "events.log")
	local := write("local.yaml", `
telemetry:
  sinks: [{name: events, type: file, file: {path: `+events+`}}]
  event: [events]
`)
	p := startProc(t, "run", "--etcd-endpoints", etcd, "--local-config", local, "--admin", "127.0.0.1:0",
		"--cache-file", filepath.Join(dir, "last-good.json"), "--wasm-cache-dir", filepath.Join(dir, "wasm"),
		"--access-log", "", "--log-format", "json")
	p.stderr.wait(t, p, regexp.MustCompile(`"msg":"configuration applied"`), 20*time.Second)
	// The file sink writes off the request path: wait for the line.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(events)
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var r map[string]any
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("record %q: %v", sc.Bytes(), err)
			}
			if r["kind"] == "event" && r["type"] == "config_applied" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no config_applied event in %s:\n%s\nproxy stderr:\n%s", events, b, p.stderr)
		}
		select {
		case <-p.exited:
			t.Fatalf("the proxy exited: %v\n%s", p.err, p.stderr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
