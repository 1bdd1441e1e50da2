package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// TestEtcdProxyReloadsLocalConfig runs a proxy that follows a control
// plane with --local-config, then changes the file and sends SIGHUP: the
// new event sink takes the reload's config_applied event. A file whose
// telemetry section names an unknown sink is refused with its field path
// on the next SIGHUP, and the sink in force records the refusal.
func TestEtcdProxyReloadsLocalConfig(t *testing.T) {
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
	first, second := filepath.Join(dir, "first.log"), filepath.Join(dir, "second.log")
	local := write("local.yaml", `
telemetry:
  sinks: [{name: events, type: file, file: {path: `+first+`}}]
  event: [events]
`)
	p := startProc(t, "run", "--etcd-endpoints", etcd, "--local-config", local, "--admin", "127.0.0.1:0",
		"--cache-file", filepath.Join(dir, "last-good.json"), "--wasm-cache-dir", filepath.Join(dir, "wasm"),
		"--access-log", "", "--log-format", "json")
	// waitEvent waits for an event record of type typ whose message is
	// msg in file.
	waitEvent := func(file, typ, msg string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			b, _ := os.ReadFile(file)
			sc := bufio.NewScanner(bytes.NewReader(b))
			for sc.Scan() {
				var r map[string]any
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					t.Fatalf("record %q: %v", sc.Bytes(), err)
				}
				if r["kind"] == "event" && r["type"] == typ && regexp.MustCompile(msg).MatchString(r["message"].(string)) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s event matching %q in %s:\n%s\nproxy stderr:\n%s", typ, msg, file, b, p.stderr)
			}
			select {
			case <-p.exited:
				t.Fatalf("the proxy exited: %v\n%s", p.err, p.stderr)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	waitEvent(first, "config_applied", "configuration applied")

	write("local.yaml", `
telemetry:
  sinks: [{name: events, type: file, file: {path: `+second+`}}]
  event: [events]
`)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitEvent(second, "config_applied", "telemetry reloaded")

	write("local.yaml", `
telemetry:
  sinks: [{name: events, type: file, file: {path: `+second+`}}]
  event: [events, siem]
`)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitEvent(second, "config_rejected", `telemetry\.event\[1\].*unknown sink "siem"`)
}
