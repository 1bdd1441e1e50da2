package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestPluginBuildInspectTest(t *testing.T) {
	wasm := filepath.Join(t.TempDir(), "hello.wasm")
	out, err := runCLI(t, "plugin", "build", "-o", wasm, filepath.Join("..", "..", "sdk", "examples", "hello"))
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if !strings.Contains(out, "sha256 ") || !strings.Contains(out, "bytes") {
		t.Errorf("build printed %q", out)
	}

	out, err = runCLI(t, "plugin", "inspect", wasm)
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	for _, want := range []string{"proxy-wasm 0.2.1", "proxy_on_memory_allocate", "env (", "load     ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}

	out, err = runCLI(t, "plugin", "test", wasm, "--request", "GET /hello", "-H", "user-agent: cli", "--config", `{"greeting":"hey"}`)
	if err != nil {
		t.Fatalf("test: %v\n%s", err, out)
	}
	for _, want := range []string{"upstream received nothing", "from the plugin", "  200", "hey", "info: greeting cli", "hello_served = 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("test output lacks %q:\n%s", want, out)
		}
	}

	out, err = runCLI(t, "plugin", "test", wasm, "--request", "POST /x")
	if err != nil || !strings.Contains(out, "x-hello: hello") {
		t.Errorf("test of a forwarded request: %v\n%s", err, out)
	}
	if n := strings.Count(out, "host: example.com"); n != 1 {
		t.Errorf("the upstream's host is printed %d times, want once:\n%s", n, out)
	}
}

func TestPluginInspectRejects(t *testing.T) {
	out, err := runCLI(t, "plugin", "inspect", filepath.Join("..", "..", "proxy", "wasm", "testdata", "noabi.wasm"))
	if err == nil || exitCode(err) != exitInvalid {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(out, "not a proxy-wasm v0.2 module") {
		t.Errorf("output:\n%s", out)
	}
}

func TestPluginBuiltins(t *testing.T) {
	out, err := runCLI(t, "plugin", "test", "builtin:encryption", "--request", "GET /pay",
		"--config", `{"default":{"require":"tls"}}`)
	if err != nil || !strings.Contains(out, "403") || !strings.Contains(out, "TLS is required") {
		t.Errorf("test builtin:encryption: %v\n%s", err, out)
	}
	file := filepath.Join(t.TempDir(), "t.wasm")
	if out, err := runCLI(t, "plugin", "extract", "telemetry", "-o", file); err != nil || !strings.Contains(out, "sha256") {
		t.Errorf("extract: %v\n%s", err, out)
	}
}

// TestPluginTestTCP: plugin test --tcp runs a network filter through one
// connection and prints what each read passed on, held or closed.
func TestPluginTestTCP(t *testing.T) {
	wasm := "../../proxy/wasm/testdata/tcpfilter.wasm"
	out, err := runCLI(t, "plugin", "test", wasm, "--tcp", `par`, "--tcp", `tial secret\n`, "--tcp-upstream", `ok\n`)
	if err != nil {
		t.Fatalf("test: %v\n%s", err, out)
	}
	for _, want := range []string{`client sent "par": held`, `client sent "tial secret\n": passed on "partial ******\n"`,
		`upstream sent "ok\n": passed on "OK\n"`, "connections = 1", "closes_remote = 1", "done = 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "plugin", "test", wasm, "--tcp", `DENY\n`, "--tcp", `never\n`)
	if err != nil || !strings.Contains(out, "the plugin closed the connection") || strings.Contains(out, "never") {
		t.Errorf("a denied line: %v\n%s", err, out)
	}
}
