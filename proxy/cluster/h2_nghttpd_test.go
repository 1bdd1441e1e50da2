package cluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// TestH2ClientNghttpd runs the client against nghttpd, nghttp2's server,
// over cleartext HTTP/2: a peer whose HPACK encoder, frame sizes and
// flow control are not Go's. Responses small and large (a body beyond
// the stream's first window), a 404, HEAD, and many requests from
// several goroutines on the connection, so that both dynamic tables
// fill and evict. It skips when nghttpd is not installed (Debian package
// nghttp2-server).
func TestH2ClientNghttpd(t *testing.T) {
	bin, err := exec.LookPath("nghttpd")
	if err != nil {
		if _, err = os.Stat("/usr/sbin/nghttpd"); err != nil {
			t.Skip("nghttpd is not installed (Debian package nghttp2-server)")
		}
		bin = "/usr/sbin/nghttpd"
	}
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 12<<10) // 192 KiB
	for name, body := range map[string][]byte{"index.html": []byte("hello"), "big.bin": big} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	addr := testaddr.Free(t)
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--no-tls", "--address="+host, "--htdocs="+dir, port)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("nghttpd said:\n%s", out.String())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nghttpd did not listen on %s", addr)
		}
	}
	c := newH2Client(poolKey{addr: addr, connectTimeout: 5 * time.Second, idleTimeout: time.Minute, http2: true}, nil)
	t.Cleanup(c.tr.CloseIdleConnections)

	do := func(method, path string, i int) (*fasthttp.Response, []byte, error) {
		req := get(path)
		req.Header.SetMethod(method)
		req.Header.Set("X-Request-Id", fmt.Sprintf("req-%08d", i))
		req.Header.Set("X-Stable", "the same on every request")
		resp := new(fasthttp.Response)
		var s Body
		if err := c.do(req, resp, 10*time.Second, &s); err != nil {
			return nil, nil, err
		}
		return resp, readAll(t, resp, &s), nil
	}
	resp, body, err := do("GET", "/big.bin", 0)
	if err != nil || resp.StatusCode() != 200 || !bytes.Equal(body, big) {
		t.Fatalf("big.bin: %v, status %d, %d bytes of %d", err, statusOf(resp), len(body), len(big))
	}
	if !strings.HasPrefix(string(resp.Header.Peek("Server")), "nghttpd") {
		t.Errorf("Server %q: not nghttpd's answer", resp.Header.Peek("Server"))
	}
	if resp, _, err := do("GET", "/missing", 1); err != nil || resp.StatusCode() != 404 {
		t.Errorf("missing: %v, status %d", err, statusOf(resp))
	}
	if resp, body, err := do("HEAD", "/index.html", 2); err != nil || resp.StatusCode() != 200 || len(body) != 0 {
		t.Errorf("HEAD: %v, status %d, %d body bytes", err, statusOf(resp), len(body))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				path := fmt.Sprintf("/index.html?g=%d&i=%d", g, i)
				if i%10 == 0 {
					path = "/big.bin"
				}
				resp, body, err := do("GET", path, g*1000+i)
				switch {
				case err != nil:
					errs <- fmt.Errorf("%s: %w", path, err)
				case resp.StatusCode() != 200:
					errs <- fmt.Errorf("%s: status %d", path, resp.StatusCode())
				case path == "/big.bin" && !bytes.Equal(body, big), path != "/big.bin" && string(body) != "hello":
					errs <- fmt.Errorf("%s: %d bytes, not the file", path, len(body))
				default:
					continue
				}
				return
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := c.conns.Load(); n != 1 {
		t.Errorf("%d connections, want the one", n)
	}
}

func statusOf(resp *fasthttp.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode()
}
