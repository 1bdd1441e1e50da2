package sidecar_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// TestSidecarWasmFilters: Wasm plugins of a sidecar's --local-config on
// its inbound and outbound. web's and orders' sidecars run as processes;
// web's outbound and orders' inbound each run a filter built with the
// proxy-wasm Go SDK, unchanged (proxy/wasm/testdata/addheader.wasm adds
// x-wasm: 1 to the request), so orders' app sees the header twice. A
// filter that names no plugin stops a sidecar at start, with the field's
// path.
func TestSidecarWasmFilters(t *testing.T) {
	bin := wasmgateBin(t)
	module, err := filepath.Abs("../../proxy/wasm/testdata/addheader.wasm")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cp, admin, roots := startControlPlane(t)
	dir := t.TempDir()
	bundle := filepath.Join(dir, "trust-bundle.pem")
	if err := os.WriteFile(bundle, roots, 0o644); err != nil {
		t.Fatal(err)
	}
	plugins := filepath.Join(dir, "plugins.yaml")
	if err := os.WriteFile(plugins, []byte("plugins:\n- {name: tag, file: "+module+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// orders' app answers with the x-wasm values it received.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "x-wasm=%s", strings.Join(r.Header.Values("x-wasm"), ","))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	ordersPort := l.Addr().(*net.TCPAddr).Port

	pair := &processPair{quit: syscall.SIGTERM}
	t.Cleanup(pair.stop)
	token := func(sa string) string {
		tok, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: "default", ServiceAccount: sa})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	webOut := testaddr.Free(t)
	orders := sidecarArgs(t, cp.APIURL(), token("orders"), bundle, mkdir(t, filepath.Join(dir, "orders")), "orders", ordersPort, testaddr.Free(t))
	pair.start(t, bin, append(orders, "--local-config", plugins, "--inbound-filters", "tag")...)
	web := sidecarArgs(t, cp.APIURL(), token("web"), bundle, mkdir(t, filepath.Join(dir, "web")), "web", port(t, testaddr.Free(t)), webOut)
	pair.start(t, bin, append(web, "--local-config", plugins, "--outbound-filters", "tag", "--calls", "orders")...)

	call := func() (string, error) {
		c, err := net.DialTimeout("tcp", webOut, time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, err = bufio.NewReader(resp.Body).WriteTo(&b)
		return fmt.Sprintf("%d %s", resp.StatusCode, b.String()), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := call()
		if err == nil && strings.HasPrefix(got, "200 ") {
			if got != "200 x-wasm=1,1" {
				t.Fatalf("orders' app saw %q, want both filters' header", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web -> orders through the filters: %q %v\n%s", got, err, pair.output())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A filter that names no plugin: the sidecar does not start.
	bad := sidecarArgs(t, cp.APIURL(), token("payments"), bundle, mkdir(t, filepath.Join(dir, "payments")), "payments", port(t, testaddr.Free(t)), testaddr.Free(t))
	cmd := exec.CommandContext(ctx, bin, append(bad, "--local-config", plugins, "--inbound-filters", "tag,waf")...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `sidecar.inbound_filters[1]: no plugin "waf"`) {
		t.Fatalf("a filter of no plugin: %v\n%s", err, out)
	}
}
