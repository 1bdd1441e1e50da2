package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// TestHelpHidesSecrets: with every secret the CLI reads from the
// environment set, no command's --help prints one, and every help has the
// table of exit statuses.
func TestHelpHidesSecrets(t *testing.T) {
	secrets := map[string]string{
		"WASMGATE_TOKEN":         "tok-4d1c0e7a9b2f-secret-in-env",
		"WASMGATE_ETCD_PASSWORD": "pw-77a3e1-secret-in-env",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string(nil), path...), sub.Name()))
		}
	}
	walk(newRootCmd(), nil)
	if len(paths) < 20 {
		t.Fatalf("walked %d commands, expected every command", len(paths))
	}
	for _, path := range paths {
		name := strings.Join(append([]string{"wasmgate"}, path...), " ")
		t.Run(name, func(t *testing.T) {
			// A new tree each time: flags read the environment when the
			// tree is built.
			out, err := runCLI(t, append(append([]string(nil), path...), "--help")...)
			if err != nil {
				t.Fatalf("--help: %v", err)
			}
			for k, v := range secrets {
				if strings.Contains(out, v) {
					t.Errorf("--help prints $%s:\n%s", k, out)
				}
			}
			if !strings.Contains(out, exitCodesHelp) {
				t.Errorf("--help lacks the exit statuses:\n%s", out)
			}
		})
	}
}

// TestExitCodesDocumented: docs/exit-codes.md holds the table that the
// help prints.
func TestExitCodesDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "exit-codes.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), exitCodesHelp) {
		t.Errorf("docs/exit-codes.md does not hold the table of the help:\n%s", exitCodesHelp)
	}
}

// TestExitCodes runs each command as a process into each outcome of the
// table of exit statuses, against a real control plane.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	const token = "a-test-token-of-32-characters-xx"
	p := startProc(t, "controlplane", "--data-dir", filepath.Join(dir, "cp"), "--listen", "127.0.0.1:0",
		"--etcd-listen-client", "127.0.0.1:0", "--etcd-listen-peer", "127.0.0.1:0", "--admin-token", token, "--log-format", "json")
	re := regexp.MustCompile(`(?m)^\{.*"msg":"admin API serving".*"url":"([^"]+)".*\}$`)
	server := p.stderr.wait(t, p, re, 60*time.Second)[1]

	write := func(name, doc string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good.yaml", `
listeners: [{name: public, address: "127.0.0.1:8080"}]
clusters: [{name: api, endpoints: [{address: "127.0.0.1:9001"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: api}]
`)
	changed := write("changed.yaml", `
listeners: [{name: public, address: "127.0.0.1:8080"}]
clusters: [{name: api, endpoints: [{address: "127.0.0.1:9002"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: api}]
`)
	unknownCluster := write("unknown-cluster.yaml", `
listeners: [{name: public, address: "127.0.0.1:8080"}]
clusters: [{name: api, endpoints: [{address: "127.0.0.1:9001"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: nowhere}]
`)
	unknownField := write("unknown-field.yaml", "listeners: [{name: public, adress: \"127.0.0.1:8080\"}]\n")
	notWasm := write("not.wasm", "not a module")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	ctl := []string{"ctl", "--server", server, "--token", token}
	cases := []struct {
		name string
		args []string
		code int
		say  string // in the output
	}{
		{"apply", append(ctl, "apply", "-f", good), exitOK, "applied at revision"},
		{"diff same", append(ctl, "diff", "-f", good), exitOK, "no differences"},
		{"diff differs", append(ctl, "diff", "-f", changed), exitDifferences, "127.0.0.1:9002"},
		{"apply conflict", append(ctl, "apply", "-f", changed, "--expected-revision", "1"), exitConflict, "conflict"},
		{"apply invalid configuration", append(ctl, "apply", "-f", unknownCluster), exitInvalid, `unknown cluster "nowhere"`},
		{"apply undecodable file", append(ctl, "apply", "-f", unknownField), exitInvalid, "adress"},
		{"apply missing file", append(ctl, "apply", "-f", filepath.Join(dir, "none.yaml")), exitInvalid, "none.yaml"},
		{"diff undecodable file", append(ctl, "diff", "-f", unknownField), exitInvalid, "adress"},
		{"bad token", []string{"ctl", "--server", server, "--token", "wrong-token-wrong-token", "get", "clusters"}, exitDenied, "not authenticated"},
		{"get missing", append(ctl, "get", "clusters", "nope"), exitNotFound, "not found"},
		{"delete missing", append(ctl, "delete", "clusters", "nope"), exitNotFound, "not found"},
		{"rollback unknown revision", append(ctl, "rollback", "999999"), exitNotFound, "ctl history"},
		{"unreachable", []string{"ctl", "--server", "http://" + refused, "--token", token, "status"}, exitFailure, "cannot reach the control plane"},
		{"validate ok", []string{"validate", "-c", good}, exitOK, "ok"},
		{"validate invalid", []string{"validate", "-c", unknownCluster}, exitInvalid, `unknown cluster "nowhere"`},
		{"run invalid", []string{"run", "-c", unknownCluster}, exitInvalid, `unknown cluster "nowhere"`},
		{"plugin inspect not wasm", []string{"plugin", "inspect", notWasm}, exitInvalid, "not a valid WebAssembly module"},
		{"plugin test not wasm", []string{"plugin", "test", notWasm}, exitInvalid, ""},
		{"unknown flag", []string{"validate", "--nope"}, exitFailure, "unknown flag"},
		{"unknown command", []string{"nope"}, exitFailure, "unknown command"},
		{"unknown ctl command", []string{"ctl", "nope"}, exitFailure, `unknown command "nope" for "wasmgate ctl"`},
		{"unknown plugin command", []string{"plugin", "nope"}, exitFailure, `unknown command "nope" for "wasmgate plugin"`},
		{"up with etcd's port taken", []string{"up", "--dir", filepath.Join(dir, "up"), "--etcd", busy.Addr().String(),
			"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--api", "127.0.0.1:0"}, exitFailure, "--etcd " + busy.Addr().String() + ": the address is in use"},
		{"bench target down", []string{"bench", "-d", "1s", "-q", "http://" + refused + "/"}, exitFailure, "refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(wasmgateBin, tc.args...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("wasmgate %s: exit status %d, want %d\n%s", strings.Join(tc.args, " "), code, tc.code, out.String())
			}
			if !strings.Contains(out.String(), tc.say) {
				t.Errorf("wasmgate %s: output lacks %q:\n%s", strings.Join(tc.args, " "), tc.say, out.String())
			}
			if strings.Contains(out.String(), token) {
				t.Errorf("the output prints the token:\n%s", out.String())
			}
		})
	}
}
