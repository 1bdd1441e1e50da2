package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLocalDemo runs local/demo.sh as an operator would, with the binary
// built here and free ports: the two proxies serve the fleet
// configuration over both backends, and Ctrl-C (SIGINT to the process
// group) stops every process it started.
func TestLocalDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts six processes")
	}
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: demo.sh needs it", tool)
		}
	}
	bin := wasmgateBin(t)
	a := testaddr.FreeN(t, 8)
	port := a[3][strings.LastIndex(a[3], ":")+1:]
	portA := a[6][strings.LastIndex(a[6], ":")+1:]
	portB := a[7][strings.LastIndex(a[7], ":")+1:]
	cmd := exec.Command("bash", "local/demo.sh")
	cmd.Env = append(os.Environ(),
		"WASMGATE="+bin, "WASMGATE_DEMO_DIR="+t.TempDir(),
		"WASMGATE_DEMO_API="+a[0], "WASMGATE_DEMO_ETCD="+a[1], "WASMGATE_DEMO_ETCD_PEER="+a[2],
		"WASMGATE_DEMO_PORT="+port, "WASMGATE_DEMO_ADMIN1="+a[4], "WASMGATE_DEMO_ADMIN2="+a[5],
		"WASMGATE_DEMO_BACKEND_A="+portA, "WASMGATE_DEMO_BACKEND_B="+portB,
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		// Whatever happened, leave no process behind.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}()

	deadline := time.After(30 * time.Second)
	for !strings.Contains(out.String(), "wasmgate demo is up") {
		select {
		case err := <-exited:
			t.Fatalf("demo.sh ended before it was up: %v\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("demo.sh was not up within 30s:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	get := func(url string) (int, string) {
		resp, err := client.Get(url)
		if err != nil {
			t.Errorf("GET %s: %v", url, err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// demo.sh waits for one backend to answer through the proxies; the
	// second one's registration may take a moment more.
	seen := map[string]bool{}
	for i := 0; i < 100 && len(seen) < 2; i++ {
		code, body := get("http://127.0.0.1:" + port + "/")
		if code != http.StatusOK {
			t.Fatalf("GET / through the proxies: %d %q\n%s", code, body, out.String())
		}
		seen[strings.TrimSpace(body)] = true
		time.Sleep(20 * time.Millisecond)
	}
	if !seen["hello from backend-a"] || !seen["hello from backend-b"] {
		t.Errorf("the proxies reached %v, want both backends", seen)
	}
	if code, body := get("http://127.0.0.1:" + port + "/api/hello"); code != http.StatusOK {
		t.Errorf("GET /api/hello: %d %q", code, body)
	}
	for _, admin := range []string{a[4], a[5]} {
		if code, body := get("http://" + admin + "/ready"); code != http.StatusOK {
			t.Errorf("proxy admin %s /ready: %d %q", admin, code, body)
		}
	}

	// Ctrl-C: the terminal sends SIGINT to the whole foreground group.
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("demo.sh did not stop within 20s of SIGINT:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "stopped") {
		t.Errorf("demo.sh did not report stopping:\n%s", out.String())
	}
	if strings.Contains(out.String(), "exited on its own") {
		t.Errorf("demo.sh took Ctrl-C for a process that ended on its own:\n%s", out.String())
	}
	// Every process it started is gone: they run in sessions of their own,
	// outside the group, so that Ctrl-C reaches demo.sh alone.
	for _, m := range regexp.MustCompile(`started (\S+) \(pid (\d+)\)`).FindAllStringSubmatch(out.String(), -1) {
		pid, _ := strconv.Atoi(m[2])
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still runs after demo.sh ended", m[1], pid)
		}
	}
	// Every process of the group is gone.
	for i := 0; ; i++ {
		err := syscall.Kill(-pgid, 0)
		if errors.Is(err, syscall.ESRCH) {
			break
		}
		if i == 50 {
			ps, _ := exec.Command("ps", "-o", "pid,args", "-g", fmt.Sprint(pgid)).CombinedOutput()
			t.Fatalf("processes of demo.sh are still running after it ended:\n%s", ps)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
