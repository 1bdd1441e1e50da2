package sidecar_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// TestSidecarWasmFilters: Wasm plugins of a sidecar's --local-config on
// its inbound and outbound. web's and orders' sidecars run as processes;
// web's outbound and orders' inbound each run a filter built with the
// proxy-wasm Go SDK, unchanged (proxy/wasm/testdata/addheader.wasm adds
// x-wasm: 1 to the request), so orders' app sees the header twice. A
// filter that names no plugin stops a sidecar at start, with the field's
// path. orders' second inbound filter is the first-party authz module,
// first with a configuration that allows every request: a new
// configuration that denies, read at SIGHUP, takes effect without a
// restart, and a file that does not load changes nothing.
func TestSidecarWasmFilters(t *testing.T) {
	bin := wasmgateBin(t)
	module, err := filepath.Abs("../../proxy/wasm/testdata/addheader.wasm")
	if err != nil {
		t.Fatal(err)
	}
	authz, err := filepath.Abs("../../plugins/authz/authz.wasm")
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
	ordersLocal := filepath.Join(dir, "orders-local.yaml")
	writeOrders := func(gate string) {
		doc := "plugins:\n- {name: tag, file: " + module + "}\n- {name: gate, file: " + authz + ", config: " + gate + "}\n"
		if err := os.WriteFile(ordersLocal, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeOrders(`{"default": "allow"}`)

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
	pair.start(t, bin, append(orders, "--local-config", ordersLocal, "--inbound-filters", "tag,gate")...)
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

	// A Wasm plugin of the control plane for orders' inbound: its module
	// pushed as a blob, the plugin applied; orders' sidecar fetches the
	// module with its certificate and runs it before its own filters.
	mod, err := os.ReadFile(module)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := admin.PushBlob(ctx, mod)
	if err != nil {
		t.Fatal(err)
	}
	central := resource.Ref{Kind: resource.WasmPlugins, Name: "orders-tag"}
	doc := fmt.Sprintf(`{"name": "orders-tag", "namespace": "default", "service": "orders", "mode": "SERVER", "sha256": %q}`, blob.SHA256)
	if _, err := admin.Put(ctx, central, []byte(doc), api.Options{}); err != nil {
		t.Fatal(err)
	}
	waitCall := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := call()
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("calls answer %q %v, want %q\n%s", got, err, want, pair.output())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCall("200 x-wasm=1,1,1")
	// A workload reads the modules of its namespace's Wasm plugins only.
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "web", "identity", "svid.pem"), filepath.Join(dir, "web", "identity", "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	asWeb := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}}}
	for sha, want := range map[string]int{blob.SHA256: http.StatusOK, strings.Repeat("ab", 32): http.StatusForbidden} {
		resp, err := asWeb.Get(cp.APIURL() + "/v1/blobs/" + sha)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("web's certificate reading blob %.12s: %d, want %d", sha, resp.StatusCode, want)
		}
	}
	if _, err := admin.Delete(ctx, central, api.Options{}); err != nil {
		t.Fatal(err)
	}
	waitCall("200 x-wasm=1,1")

	// orders' gate now denies: SIGHUP, and the calls are refused by it
	// from then on. Calls run all along, from four clients: each is
	// answered by the old gate or the new, none fails.
	writeOrders(`{"default": "deny"}`)
	var (
		mu       sync.Mutex
		failures []string
		denied   atomic.Bool
		calls    atomic.Int64
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := call()
				calls.Add(1)
				switch {
				case err == nil && got == "200 x-wasm=1,1":
				case err == nil && (strings.HasPrefix(got, "403 ") || strings.HasPrefix(got, "401 ")):
					denied.Store(true)
				default:
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%q %v", got, err))
					mu.Unlock()
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	if err := syscall.Kill(pair.pids[0], syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !denied.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if !denied.Load() || len(failures) > 0 {
		t.Fatalf("the reload under load: denied %v, %d failed of %d: %q\n%s", denied.Load(), len(failures), calls.Load(), failures, pair.output())
	}
	t.Logf("%d calls across the reload, none failed", calls.Load())
	// A file that names a module that is not there: rejected, the gate
	// still denies.
	if err := os.WriteFile(ordersLocal, []byte("plugins:\n- {name: tag, file: /nonexistent.wasm}\n- {name: gate, file: "+authz+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pair.pids[0], syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if got, err := call(); err != nil || !(strings.HasPrefix(got, "403 ") || strings.HasPrefix(got, "401 ")) {
		t.Fatalf("after a bad file: %q %v\n%s", got, err, pair.output())
	}
	if !strings.Contains(pair.outs[0].String(), "--local-config rejected") {
		t.Fatalf("orders' sidecar did not say it rejected the file:\n%s", pair.outs[0].String())
	}

	// A filter that names no plugin: the sidecar does not start.
	bad := sidecarArgs(t, cp.APIURL(), token("payments"), bundle, mkdir(t, filepath.Join(dir, "payments")), "payments", port(t, testaddr.Free(t)), testaddr.Free(t))
	cmd := exec.CommandContext(ctx, bin, append(bad, "--local-config", plugins, "--inbound-filters", "tag,waf")...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `sidecar.inbound_filters[1]: no plugin "waf"`) {
		t.Fatalf("a filter of no plugin: %v\n%s", err, out)
	}
}
