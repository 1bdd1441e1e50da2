// Package benchmarks holds the side-by-side benchmark suite; see README.md.
// This test checks its Go parts: the upstream and the bare forwarder.
package benchmarks

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/internal/testaddr"
)

func TestForwarderProxiesToUpstream(t *testing.T) {
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), "./upstream", "./forwarder")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	client := &http.Client{Timeout: 5 * time.Second}
	upAddr := testaddr.Free(t)
	up := start(t, filepath.Join(bin, "upstream"), "-addr", upAddr)
	waitUp(t, client, "http://"+upAddr+"/64")
	fwAddr := testaddr.Free(t)
	start(t, filepath.Join(bin, "forwarder"), "-addr", fwAddr, "-upstream", upAddr)
	waitUp(t, client, "http://"+fwAddr+"/64")

	tests := []struct {
		path   string
		status int
		body   []byte
	}{
		{"/64", http.StatusOK, bytes.Repeat([]byte("a"), 64)},
		{"/16k", http.StatusOK, bytes.Repeat([]byte("b"), 16<<10)},
		{"/missing", http.StatusNotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			// Several requests, so that both hops reuse connections.
			for i := 0; i < 3; i++ {
				status, body := get(t, client, "http://"+fwAddr+tt.path)
				if status != tt.status {
					t.Fatalf("GET %s through the forwarder: status %d, want %d", tt.path, status, tt.status)
				}
				if tt.body != nil && !bytes.Equal(body, tt.body) {
					t.Fatalf("GET %s through the forwarder: %d-byte body differs from the upstream's %d bytes", tt.path, len(body), len(tt.body))
				}
			}
		})
	}

	t.Run("upstream down", func(t *testing.T) {
		stop(up)
		status, _ := get(t, client, "http://"+fwAddr+"/64")
		if status != http.StatusBadGateway {
			t.Fatalf("status %d with the upstream down, want %d", status, http.StatusBadGateway)
		}
	})
}

func start(t *testing.T, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop(cmd)
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(argv[0]), out.String())
		}
	})
	return cmd
}

// stop kills cmd and reaps it; calling it twice is harmless.
func stop(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func waitUp(t *testing.T, client *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, client *http.Client, url string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, body
}
