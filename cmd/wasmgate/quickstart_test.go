package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// startProcIn is startProc with a working directory.
func startProcIn(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(wasmgateBin, args...), stdout: newLineBuffer(), stderr: newLineBuffer(), exited: make(chan struct{})}
	p.cmd.Dir = dir
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
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(20 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
	})
	return p
}

// readmeBlock returns the lines of the first ```sh block after heading in
// the README, and the lines of every ```sh block of the README.
func readmeBlock(t *testing.T, heading string) (block, all []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatchIndex(text, -1)
	at := strings.Index(text, heading)
	if at < 0 {
		t.Fatalf("the README has no %q", heading)
	}
	for _, m := range blocks {
		lines := strings.Split(strings.TrimRight(text[m[2]:m[3]], "\n"), "\n")
		all = append(all, lines...)
		if block == nil && m[0] > at {
			block = lines
		}
	}
	return block, all
}

// TestREADMEQuickstart runs `wasmgate up` in a temporary folder, then the
// README's quickstart, command by command as written there (on other
// ports), and checks what each does. A command this test does not know
// fails it: the README and what works cannot drift apart.
func TestREADMEQuickstart(t *testing.T) {
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: %v", tool, err)
		}
	}
	dir := t.TempDir()
	listen, admin, api, etcd, admin2 := testaddr.Free(t), testaddr.Free(t), testaddr.Free(t), testaddr.Free(t), testaddr.Free(t)
	// The README's addresses, moved to free ports; its commands, run with
	// the binary built for the tests.
	moved := strings.NewReplacer(
		"go run ./cmd/wasmgate", wasmgateBin,
		"localhost:8080", listen, "127.0.0.1:8080", listen,
		"localhost:9901", admin, "127.0.0.1:9901", admin,
		"127.0.0.1:9900", api, "127.0.0.1:2379", etcd, "127.0.0.1:9902", admin2,
	)
	quick, all := readmeBlock(t, "## Quickstart")
	if len(quick) == 0 || !regexp.MustCompile(`^go run ./cmd/wasmgate up &`).MatchString(quick[0]) {
		t.Fatalf("the quickstart does not start with `go run ./cmd/wasmgate up &`: %q", quick)
	}
	upArgs := []string{"up", "--listen", listen, "--admin", admin, "--api", api, "--etcd", etcd}
	start := time.Now()
	up := startProcIn(t, dir, upArgs...)
	up.stdout.wait(t, up, regexp.MustCompile(`wasmgate is up`), 5*time.Minute)
	t.Logf("up printed its banner after %v", time.Since(start).Round(time.Millisecond))
	banner := up.stdout.String()
	for _, want := range []string{"http://" + listen, "http://" + admin, "http://" + api, "http://" + etcd, filepath.Join(".wasmgate", "access.log")} {
		if !strings.Contains(banner, want) {
			t.Errorf("the banner lacks %s:\n%s", want, banner)
		}
	}
	if n := strings.Count(up.stderr.String(), "generated an admin token"); n != 1 {
		t.Errorf("a first start says %d times that it generated a token, want once", n)
	}
	get := func(path string, header ...string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+listen+path, nil)
		if len(header) == 2 {
			req.Header.Set(header[0], header[1])
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	// Ready when the banner says so: every demo route answers at once.
	if code, body := get("/"); code != 200 {
		t.Errorf("the first request after the banner: %d %s", code, body)
	}

	t.Run("second up in the same folder", func(t *testing.T) {
		began := time.Now()
		second := startProcIn(t, dir, upArgs...)
		code := second.waitExit(t, 10*time.Second)
		msg := second.stderr.String()
		if code != exitFailure {
			t.Errorf("exit status %d, want %d", code, exitFailure)
		}
		for _, want := range []string{fmt.Sprintf("pid %d", up.cmd.Process.Pid), "http://" + listen, "http://" + api, "--dir", "kill"} {
			if !strings.Contains(msg, want) {
				t.Errorf("the refusal lacks %q:\n%s", want, msg)
			}
		}
		t.Logf("refused after %v:\n%s", time.Since(began).Round(time.Millisecond), msg)
	})

	var (
		env     []string // the quickstart's exports, in order
		applied string   // revision printed by ctl apply
	)
	shell := func(line string) (string, int) {
		script := strings.Join(append(append([]string(nil), env...), line), "\n")
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), 0
	}
	demoFile := filepath.Join(dir, ".wasmgate", "demo.yaml")
	steps := []struct {
		match *regexp.Regexp
		check func(t *testing.T, out string, code int)
	}{
		{regexp.MustCompile(`^curl -i localhost:\d+/\s`), func(t *testing.T, out string, code int) {
			if code != 0 || !strings.Contains(out, "HTTP/1.1 200") || !strings.Contains(strings.ToLower(out), "x-trace-id:") {
				t.Errorf("want 200 with x-trace-id:\n%s", out)
			}
		}},
		{regexp.MustCompile(`^curl \S+/api/hello`), func(t *testing.T, out string, code int) {
			if code != 0 || !strings.Contains(out, `"path": "/hello"`) {
				t.Errorf("want the backend to see /hello:\n%s", out)
			}
		}},
		{regexp.MustCompile(`^curl -H 'x-ssn: ([^']+)'`), func(t *testing.T, out string, code int) {
			if code != 0 || !strings.Contains(strings.ToLower(out), `"x-ssn"`) || strings.Contains(out, "078-05-1120") {
				t.Errorf("want x-ssn sealed upstream:\n%s", out)
			}
		}},
		{regexp.MustCompile(`^curl -i \S+/admin/`), func(t *testing.T, out string, code int) {
			if code != 0 || !strings.Contains(out, " 403") {
				t.Errorf("want 403 without a token:\n%s", out)
			}
		}},
		{regexp.MustCompile(`^curl \S+/metrics`), func(t *testing.T, out string, code int) {
			for _, want := range []string{"wasmgate_http_requests_total{", "wasmgate_upstream_errors_total{", "wasmgate_config_reloads_total{"} {
				if code != 0 || !strings.Contains(out, want) {
					t.Errorf("want %s:\n%.3000s", want, out)
				}
			}
		}},
		{regexp.MustCompile(`^curl \S+/clusters`), func(t *testing.T, out string, code int) {
			if code != 0 || !strings.Contains(out, `"demo"`) {
				t.Errorf("want the demo cluster:\n%s", out)
			}
		}},
		{regexp.MustCompile(`^# change a route: edit \.wasmgate/demo\.yaml`), func(t *testing.T, _ string, _ int) {
			b, err := os.ReadFile(demoFile)
			if err != nil {
				t.Fatal(err)
			}
			edited := strings.Replace(string(b), `body: "ok\n"`, `body: "changed\n"`, 1)
			if edited == string(b) {
				t.Fatalf("demo.yaml has no healthz body to change:\n%s", b)
			}
			if err := os.WriteFile(demoFile, []byte(edited), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{regexp.MustCompile(`^export `), nil},
		{regexp.MustCompile(`ctl diff -f \.wasmgate/demo\.yaml`), func(t *testing.T, out string, code int) {
			if code != exitDifferences || !strings.Contains(out, `+ `) || !strings.Contains(out, "changed") {
				t.Errorf("want the change and exit status %d, got %d:\n%s", exitDifferences, code, out)
			}
			if strings.Contains(out, "{}") || strings.Count(out, "\n") > 20 {
				t.Errorf("want only what changes:\n%s", out)
			}
		}},
		{regexp.MustCompile(`ctl apply -f \.wasmgate/demo\.yaml`), func(t *testing.T, out string, code int) {
			m := regexp.MustCompile(`applied at revision (\d+)`).FindStringSubmatch(out)
			if code != 0 || m == nil {
				t.Fatalf("want it applied:\n%s", out)
			}
			applied = m[1]
			eventually(t, 10*time.Second, "the change is served", func() bool {
				code, body := get("/healthz")
				return code == 200 && body == "changed\n"
			})
		}},
		{regexp.MustCompile(`ctl status`), func(t *testing.T, out string, code int) {
			if code != 0 || !strings.Contains(out, "configuration revision "+applied+";") {
				t.Errorf("want revision %s:\n%s", applied, out)
			}
			eventually(t, 10*time.Second, "the proxy reports the revision applied", func() bool {
				out, _ := shell(moved.Replace(`go run ./cmd/wasmgate ctl status`))
				time.Sleep(200 * time.Millisecond)
				return strings.Contains(out, "converged: yes") && regexp.MustCompile(`(?m)^up\s+\S+\s+\S+\s+`+applied+`\s+current`).MatchString(out)
			})
			// The proxy's /config names the same revision.
			resp, err := http.Get("http://" + admin + "/config")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var live struct{ Version string }
			if err := json.NewDecoder(resp.Body).Decode(&live); err != nil || live.Version != applied {
				t.Errorf("/config's version = %q (%v), want the revision applied, %s", live.Version, err, applied)
			}
		}},
		{regexp.MustCompile(`ctl history && .*ctl rollback REV`), func(t *testing.T, out string, code int) {
			if code != 0 || !strings.Contains(out, "applied at revision") || !strings.Contains(out, "REVISION") {
				t.Errorf("want the history, then the rollback applied:\n%s", out)
			}
			eventually(t, 10*time.Second, "the rollback is served", func() bool {
				code, body := get("/healthz")
				return code == 200 && body == "ok\n"
			})
		}},
	}
	for _, raw := range quick[1:] {
		line := strings.TrimSpace(raw)
		if line == "" {
			continue
		}
		t.Run(line, func(t *testing.T) {
			i := 0
			for i < len(steps) && !steps[i].match.MatchString(line) {
				i++
			}
			if i == len(steps) {
				t.Fatalf("the README's quickstart has a command this test does not check; add it here")
			}
			cmd := moved.Replace(line)
			switch {
			case strings.HasPrefix(line, "#"):
				steps[i].check(t, "", 0)
				return
			case strings.HasPrefix(line, "export "):
				env = append(env, cmd)
				return
			case strings.Contains(line, "rollback REV"):
				// REV is the revision of the first change, the demo's.
				out, code := shell(moved.Replace("go run ./cmd/wasmgate ctl history -o json --limit 0"))
				var h struct{ Items []struct{ Revision int64 } }
				if err := json.Unmarshal([]byte(out), &h); code != 0 || err != nil || len(h.Items) == 0 {
					t.Fatalf("ctl history -o json: %d %v\n%s", code, err, out)
				}
				cmd = strings.Replace(cmd, "REV", fmt.Sprint(h.Items[len(h.Items)-1].Revision), 1)
			}
			out, code := shell(cmd)
			steps[i].check(t, out, code)
		})
	}

	t.Run("access log", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(dir, ".wasmgate", "access.log"))
		if err != nil || !bytes.Contains(b, []byte(`"path":"/api/hello"`)) {
			t.Errorf("the access log file: %v\n%.500s", err, b)
		}
		if strings.Contains(up.stdout.String(), `"response_flags"`) {
			t.Errorf("up prints the access log:\n%.1000s", up.stdout.String())
		}
	})

	t.Run("run follows up", func(t *testing.T) {
		var line string
		for _, l := range all {
			if strings.Contains(l, "run --etcd-endpoints http://127.0.0.1:2379") {
				line = strings.TrimSpace(strings.SplitN(l, "#", 2)[0])
			}
		}
		if line == "" {
			t.Fatal("the README has no `run --etcd-endpoints http://127.0.0.1:2379`")
		}
		args := strings.Fields(moved.Replace(line))[1:]
		p := startProcIn(t, dir, append(args, "--node-id", "second", "--wasm-cache-dir", filepath.Join(dir, "run-cache"))...)
		eventually(t, 2*time.Minute, "ctl status lists the second proxy", func() bool {
			out, _ := shell(moved.Replace("go run ./cmd/wasmgate ctl status"))
			time.Sleep(200 * time.Millisecond)
			return regexp.MustCompile(`(?m)^second\s+` + regexp.QuoteMeta(admin2)).MatchString(out)
		})
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		p.waitExit(t, 30*time.Second)
		for _, bad := range []string{"registration lost", "cannot list the configuration"} {
			if strings.Contains(p.stderr.String(), bad) {
				t.Errorf("the proxy following up logs %q:\n%s", bad, p.stderr.String())
			}
		}
	})

	t.Run("restart", func(t *testing.T) {
		if err := up.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := up.waitExit(t, 60*time.Second); code != 0 {
			t.Fatalf("exit status %d after SIGTERM:\n%s", code, up.stderr.String())
		}
		again := startProcIn(t, dir, upArgs...)
		again.stdout.wait(t, again, regexp.MustCompile(`wasmgate is up`), 5*time.Minute)
		if strings.Contains(again.stderr.String(), "generated an admin token") {
			t.Errorf("a restart says it generated a token:\n%s", again.stderr.String())
		}
		if !strings.Contains(again.stdout.String(), "the demo configuration, stored by an earlier run") {
			t.Errorf("the banner of a restart:\n%s", again.stdout.String())
		}
	})
}

// TestUpInterruptedWhileStarting: Ctrl-C while up starts stops it at once,
// with exit status 0.
func TestUpInterruptedWhileStarting(t *testing.T) {
	dir := t.TempDir()
	p := startProcIn(t, dir, "up", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--api", "127.0.0.1:0", "--etcd", "127.0.0.1:0", "--log-format", "json")
	p.stderr.wait(t, p, regexp.MustCompile(`"msg":"admin API serving"`), 2*time.Minute)
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.waitExit(t, 15*time.Second); code != 0 {
		t.Errorf("exit status %d after Ctrl-C while starting:\n%s", code, p.stderr)
	}
	t.Logf("stopped %v after Ctrl-C", time.Since(sent).Round(time.Millisecond))
}
