package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a wasmgate process.
type proc struct {
	cmd    *exec.Cmd
	stdout *lineBuffer
	stderr *lineBuffer
	exited chan struct{}
	err    error
}

// lineBuffer collects a process's output and lets a test wait for a line.
type lineBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	added chan struct{}
}

func newLineBuffer() *lineBuffer { return &lineBuffer{added: make(chan struct{}, 1)} }

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	select {
	case b.added <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// wait returns the first submatch of re once the output has it.
func (b *lineBuffer) wait(t testing.TB, p *proc, re *regexp.Regexp, within time.Duration) []string {
	t.Helper()
	deadline := time.After(within)
	for {
		if m := re.FindStringSubmatch(b.String()); m != nil {
			return m
		}
		select {
		case <-b.added:
		case <-p.exited:
			if m := re.FindStringSubmatch(b.String()); m != nil {
				return m
			}
			t.Fatalf("wasmgate exited (%v) before printing %s\nstdout:\n%s\nstderr:\n%s", p.err, re, p.stdout, p.stderr)
		case <-deadline:
			t.Fatalf("wasmgate did not print %s within %v\nstdout:\n%s\nstderr:\n%s", re, within, p.stdout, p.stderr)
		}
	}
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(wasmgateBin, args...), stdout: newLineBuffer(), stderr: newLineBuffer(), exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// waitExit waits for the process to end and returns its exit code.
func (p *proc) waitExit(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("wasmgate still running after %v\nstderr:\n%s", within, p.stderr)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// logAddr finds the address a JSON log line with msg carries.
func logAddr(t testing.TB, p *proc, msg string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^(\{.*"msg":"` + regexp.QuoteMeta(msg) + `".*\})$`)
	line := p.stderr.wait(t, p, re, 20*time.Second)[1]
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("log line %q: %v", line, err)
	}
	addr, _ := m["address"].(string)
	return strings.TrimPrefix(addr, "http://")
}

// TestDrainOnSIGTERM runs `wasmgate run`, starts a slow request, and sends
// SIGTERM: the slow request completes, new connections are refused, and the
// process exits 0 within the drain timeout.
func TestDrainOnSIGTERM(t *testing.T) {
	up := startUpstream(t, "slow")
	dir := t.TempDir()
	file := filepath.Join(dir, "wasmgate.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
drain_timeout: 5s
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: slow, endpoints: [{address: %q}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: slow}]
`, up.Addr())), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "run", "-c", file, "--log-format", "json", "--wasm-cache-dir", filepath.Join(dir, "cache"))
	addr := logAddr(t, p, "listening")
	admin := logAddr(t, p, "admin endpoints")
	if status, body, err := getBody(http.DefaultClient, "http://"+addr+"/fast"); err != nil || status != 200 {
		t.Fatalf("before the drain: %d %q %v", status, body, err)
	}

	type result struct {
		status int
		body   string
		err    error
		at     time.Time
	}
	slow := make(chan result, 1)
	go func() {
		c := &http.Client{Transport: &http.Transport{}}
		status, body, err := getBody(c, "http://"+addr+"/slow?d=1s")
		slow <- result{status, body, err, time.Now()}
	}()
	eventually(t, 5*time.Second, "the slow request reached the upstream", func() bool { return up.Requests() == 2 })

	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var refusedAt time.Time
	eventually(t, 2*time.Second, "new connections are refused while draining", func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			refusedAt = time.Now()
			return true
		}
		c.Close()
		return false
	})
	if status, body, err := getBody(http.DefaultClient, "http://"+admin+"/ready"); err == nil && status != 503 {
		t.Errorf("/ready while draining: %d %q", status, body)
	}
	r := <-slow
	if r.err != nil || r.status != 200 || !strings.Contains(r.body, `"instance":"slow"`) {
		t.Fatalf("the slow request during the drain: %d %q %v", r.status, r.body, r.err)
	}
	if !refusedAt.Before(r.at) {
		t.Errorf("connections were refused only after the slow request ended")
	}
	if code := p.waitExit(t, 5*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM\nstderr:\n%s", code, p.stderr)
	}
	t.Logf("exited %v after SIGTERM", time.Since(sent))
}

// TestShutdownDelay: with shutdown_delay, SIGTERM fails /ready at once but
// the listener keeps serving for the delay, each response closing its
// connection so clients reconnect elsewhere; then connections are refused
// and the process exits 0.
func TestShutdownDelay(t *testing.T) {
	up := startUpstream(t, "up")
	dir := t.TempDir()
	file := filepath.Join(dir, "wasmgate.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
shutdown_delay: 3s
drain_timeout: 2s
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: up, endpoints: [{address: %q}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: up}]
`, up.Addr())), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "run", "-c", file, "--log-format", "json", "--wasm-cache-dir", filepath.Join(dir, "cache"))
	addr := logAddr(t, p, "listening")
	admin := logAddr(t, p, "admin endpoints")
	get := func() (*http.Response, error) {
		c := &http.Client{Transport: &http.Transport{}, Timeout: time.Second}
		resp, err := c.Get("http://" + addr + "/x")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	if resp, err := get(); err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("before SIGTERM: %v %v", resp, err)
	}
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "/ready fails after SIGTERM", func() bool {
		status, _, err := getBody(http.DefaultClient, "http://"+admin+"/ready")
		return err == nil && status == 503
	})
	resp, err := get()
	if err != nil || resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("during the shutdown delay: %v %v (want 200 with Connection: close)", resp, err)
	}
	if d := time.Since(sent); d > 2500*time.Millisecond {
		t.Fatalf("the request during the delay ended %s after SIGTERM, too late to tell", d)
	}
	eventually(t, 5*time.Second, "connections are refused after the delay", func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if d := time.Since(sent); d < 2900*time.Millisecond {
		t.Errorf("connections were refused %s after SIGTERM, before the 3s delay", d)
	}
	if code := p.waitExit(t, 5*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM\nstderr:\n%s", code, p.stderr)
	}
}

func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(`
listeners: [{name: main, address: "127.0.0.1:8080"}]
clusters: [{name: a, endpoints: [{address: "127.0.0.1:9000"}]}]
virtual_hosts: [{name: all, domains: ["*"], routes: [{cluster: a}]}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`listeners:
  - name: main
    address: "127.0.0.1:8080"
clusters:
  - name: a
    endpoints: [{address: "127.0.0.1:9000"}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: {prefix: /}
        cluster: nowhere
      - match: {path_regex: "(unclosed"}
        cluster: a
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		file   string
		code   int
		stdout []string
		stderr []string
	}{
		{"valid", good, 0, []string{good + ": ok"}, nil},
		{"invalid", bad, 4, nil, []string{
			bad + `:12: virtual_hosts[0].routes[0].cluster: unknown cluster "nowhere"`,
			bad + `:13: virtual_hosts[0].routes[1].match.path_regex: `,
		}},
		{"missing", filepath.Join(dir, "none.yaml"), 4, nil, []string{"no such file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(wasmgateBin, "validate", "-c", tc.file)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstderr:\n%s", code, tc.code, stderr.String())
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}

// TestUpCommand runs `wasmgate up` on random ports, uses the URLs it
// prints, and stops it with SIGTERM.
func TestUpCommand(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, "up", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--api", "127.0.0.1:0", "--etcd", "127.0.0.1:0",
		"--dir", dir, "--log-level", "warn")
	proxyURL := p.stdout.wait(t, p, regexp.MustCompile(`(?m)^\s*proxy\s+(http://\S+)`), 60*time.Second)[1]
	adminURL := p.stdout.wait(t, p, regexp.MustCompile(`(?m)^\s*proxy admin\s+(http://\S+)`), time.Second)[1]

	// The demo instances register themselves; the route answers once they
	// have.
	var body string
	eventually(t, 20*time.Second, "the demo route answers", func() bool {
		var status int
		var err error
		status, body, err = getBody(http.DefaultClient, proxyURL+"/")
		return err == nil && status == 200
	})
	if !strings.Contains(body, `"instance"`) {
		t.Errorf("the demo route: %q", body)
	}
	// Both instances answer once both have registered.
	seen := map[string]bool{}
	eventually(t, 20*time.Second, "the demo route balances over demo-a and demo-b", func() bool {
		_, body, _ := getBody(http.DefaultClient, proxyURL+"/")
		var d struct{ Instance string }
		_ = json.Unmarshal([]byte(body), &d)
		seen[d.Instance] = true
		return seen["demo-a"] && seen["demo-b"]
	})
	if status, body, err := getBody(http.DefaultClient, proxyURL+"/healthz"); err != nil || status != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q %v", status, body, err)
	}
	status, metrics, err := getBody(http.DefaultClient, adminURL+"/metrics")
	if err != nil || status != 200 || !strings.Contains(metrics, `wasmgate_http_requests_total{cluster="demo",code="2xx",listener="public",route="default"}`) {
		t.Errorf("/metrics: %d %v\n%.2000s", status, err, metrics)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.waitExit(t, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM\nstderr:\n%s", code, p.stderr)
	}
}
