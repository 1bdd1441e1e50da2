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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// processMesh is a control plane on loopback and the wasmgate binary, for
// tests that run sidecars as processes (sidecars).
type processMesh struct {
	cp       *controlplane.Server
	admin    *api.Client
	bin      string
	dir      string // the test's own folder
	roots    []byte // the trust bundle
	bundle   string // its file
	sidecars *processPair
}

func startProcessMesh(t *testing.T) *processMesh {
	t.Helper()
	m := &processMesh{bin: wasmgateBin(t), dir: t.TempDir(), sidecars: &processPair{quit: syscall.SIGTERM}}
	m.cp, m.admin, m.roots = startControlPlane(t)
	m.bundle = filepath.Join(m.dir, "trust-bundle.pem")
	if err := os.WriteFile(m.bundle, m.roots, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.sidecars.stop)
	return m
}

// appPort serves h, a plain HTTP app, on a port of loopback until the
// test ends, and returns the port.
func appPort(t *testing.T, h http.HandlerFunc) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return port(t, l.Addr().String())
}

// start runs the sidecar of service svc (namespace default, its own
// service account) for an app on appPort, its outbound listener on
// outbound, with more flags.
func (m *processMesh) start(t *testing.T, svc string, appPort int, outbound string, more ...string) {
	t.Helper()
	tok, err := m.admin.CreateToken(context.Background(), api.TokenRequest{Namespace: "default", ServiceAccount: svc})
	if err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(m.dir, svc)
	for i := 2; ; i++ {
		if _, err := os.Stat(own); err != nil {
			break
		}
		own = filepath.Join(m.dir, fmt.Sprintf("%s-%d", svc, i)) // another instance
	}
	args := sidecarArgs(t, m.cp.APIURL(), tok.Token, m.bundle, mkdir(t, own), svc, appPort, outbound)
	m.sidecars.start(t, m.bin, append(args, more...)...)
}

// write writes a file of the test's folder and returns its path.
func (m *processMesh) write(t *testing.T, name, content string) string {
	t.Helper()
	f := filepath.Join(m.dir, name)
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// plugin pushes the module file to the control plane and applies the
// wasm_plugin of name made of fields (JSON members, the module's digest
// added); it returns the plugin's reference and the digest.
func (m *processMesh) plugin(t *testing.T, ctx context.Context, name, file, fields string) (resource.Ref, string) {
	t.Helper()
	mod, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := m.admin.PushBlob(ctx, mod)
	if err != nil {
		t.Fatal(err)
	}
	ref := resource.Ref{Kind: resource.WasmPlugins, Name: name}
	doc := fmt.Sprintf(`{"name": %q, %s, "sha256": %q}`, name, fields, blob.SHA256)
	if _, err := m.admin.Put(ctx, ref, []byte(doc), api.Options{}); err != nil {
		t.Fatal(err)
	}
	return ref, blob.SHA256
}

// load runs do from n goroutines, over and over, until stop is called,
// which returns how many calls ran and the errors of those that failed.
func load(n int, do func() error) (stop func() (int64, []string)) {
	var (
		mu       sync.Mutex
		failures []string
		calls    atomic.Int64
		wg       sync.WaitGroup
	)
	done := make(chan struct{})
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				err := do()
				calls.Add(1)
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	return func() (int64, []string) {
		close(done)
		wg.Wait()
		return calls.Load(), failures
	}
}

// get sends GET path with Host host to the outbound listener at addr on
// a connection of its own and returns "STATUS BODY".
func get(addr, host, path string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, err = bufio.NewReader(resp.Body).WriteTo(&b)
	return fmt.Sprintf("%d %s", resp.StatusCode, b.String()), err
}

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
	m := startProcessMesh(t)
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
	cp, admin, dir := m.cp, m.admin, m.dir
	plugins := m.write(t, "plugins.yaml", "plugins:\n- {name: tag, file: "+module+"}\n")
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

	pair := m.sidecars
	webOut := testaddr.Free(t)
	m.start(t, "orders", ordersPort, testaddr.Free(t), "--local-config", ordersLocal, "--inbound-filters", "tag,gate")
	m.start(t, "web", port(t, testaddr.Free(t)), webOut, "--local-config", plugins, "--outbound-filters", "tag", "--calls", "orders")

	call := func() (string, error) { return get(webOut, "orders", "/") }
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
	central, sha := m.plugin(t, ctx, "orders-tag", module, `"namespace": "default", "service": "orders", "mode": "SERVER"`)
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
	// A workload reads the modules of the Wasm plugins of its sidecar
	// only: web, of orders' namespace, not the module of orders' plugin.
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "web", "identity", "svid.pem"), filepath.Join(dir, "web", "identity", "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(m.roots)
	asWeb := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}}}
	for sha, want := range map[string]int{sha: http.StatusForbidden, strings.Repeat("ab", 32): http.StatusForbidden} {
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
	var denied atomic.Bool
	stop := load(4, func() error {
		got, err := call()
		switch {
		case err == nil && got == "200 x-wasm=1,1":
		case err == nil && (strings.HasPrefix(got, "403 ") || strings.HasPrefix(got, "401 ")):
			denied.Store(true)
		default:
			return fmt.Errorf("%q %v", got, err)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	if err := syscall.Kill(pair.pids[0], syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !denied.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	calls, failures := stop()
	if !denied.Load() || len(failures) > 0 {
		t.Fatalf("the reload under load: denied %v, %d failed of %d: %q\n%s", denied.Load(), len(failures), calls, failures, pair.output())
	}
	t.Logf("%d calls across the reload, none failed", calls)
	// A file that names a module that is not there: rejected, the gate
	// still denies.
	if err := os.WriteFile(ordersLocal, []byte("plugins:\n- {name: tag, file: /nonexistent.wasm}\n- {name: gate, file: "+authz+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pair.pids[0], syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The sidecar reads the file when it handles the signal, which on a
	// busy machine is some time after it is sent: the calls are checked
	// once it has said it rejected the file, so that they are answered
	// after the attempt, not before it.
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(pair.outs[0].String(), "--local-config rejected") {
		if time.Now().After(deadline) {
			t.Fatalf("orders' sidecar did not say it rejected the file:\n%s", pair.outs[0].String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, err := call(); err != nil || !(strings.HasPrefix(got, "403 ") || strings.HasPrefix(got, "401 ")) {
		t.Fatalf("after a bad file: %q %v\n%s", got, err, pair.output())
	}

	// A filter that names no plugin: the sidecar does not start.
	tok, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: "default", ServiceAccount: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	bad := sidecarArgs(t, cp.APIURL(), tok.Token, m.bundle, mkdir(t, filepath.Join(dir, "payments")), "payments", port(t, testaddr.Free(t)), testaddr.Free(t))
	cmd := exec.CommandContext(ctx, m.bin, append(bad, "--local-config", plugins, "--inbound-filters", "tag,waf")...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `sidecar.inbound_filters[1]: no plugin "waf"`) {
		t.Fatalf("a filter of no plugin: %v\n%s", err, out)
	}
}

// TestSidecarNetworkFilters: Wasm plugins as network filters on the
// mesh's opaque TCP. db is an app of protocol tcp (a line echo); its
// sidecar runs a filter built with the proxy-wasm Go SDK, unchanged
// (proxy/wasm/testdata/tcpfilter.wasm), on every connection from a peer
// (--inbound-network-filters): the filter sees the connection as
// Envoy's network filter does (listener, cluster, mutual TLS, the app's
// address upstream), changes the bytes each way, and closes a connection
// before a denied line reaches the app. A WasmPlugin of the control plane
// of type NETWORK for web's outbound then runs the same module on web's
// connections to db, before they leave web's sidecar; deleted, it stops.
func TestSidecarNetworkFilters(t *testing.T) {
	m := startProcessMesh(t)
	module, err := filepath.Abs("../../proxy/wasm/testdata/tcpfilter.wasm")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, pair := m.admin, m.sidecars
	dbLocal := m.write(t, "db-local.yaml", "plugins:\n- {name: lines, file: "+module+"}\n")
	// db's app echoes lines and keeps what it received.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var (
		mu       sync.Mutex
		received strings.Builder
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					mu.Lock()
					received.WriteString(line)
					mu.Unlock()
					if _, werr := c.Write([]byte(line)); err != nil || werr != nil {
						return
					}
				}
			}()
		}
	}()
	appPort := l.Addr().(*net.TCPAddr).Port

	m.start(t, "db", appPort, testaddr.Free(t), "--protocol", "tcp", "--local-config", dbLocal, "--inbound-network-filters", "lines")
	dbLocalPort := testaddr.Free(t)
	m.start(t, "web", port(t, testaddr.Free(t)), testaddr.Free(t), "--tcp-calls", "db="+dbLocalPort)

	// talk sends lines on one connection to db through web's sidecar and
	// returns the lines that come back until the connection ends.
	talk := func(lines ...string) ([]string, error) {
		c, err := net.DialTimeout("tcp", dbLocalPort, time.Second)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		var got []string
		for _, line := range lines {
			if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
				return got, err
			}
			back, err := r.ReadString('\n')
			if err != nil {
				return got, err
			}
			got = append(got, strings.TrimSuffix(back, "\n"))
		}
		return got, nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := talk("hello")
		if err == nil && len(got) == 1 && got[0] == "HELLO" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web -> db through db's network filter: %q %v\n%s", got, err, pair.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := talk("a secret", "PROPS")
	if err != nil || len(got) != 2 {
		t.Fatalf("lines: %q %v", got, err)
	}
	if got[0] != "A ******" {
		t.Errorf("a line with a secret came back %q, want it masked by the filter", got[0])
	}
	for _, want := range []string{"LISTENER=MESH-TCP-INBOUND", "CLUSTER=APP", "MTLS=TRUE", "UPSTREAM=127.0.0.1:" + strconv.Itoa(appPort),
		"REQUEST_PATH=ERROR STATUS RETURNED BY HOST: NOT FOUND"} {
		if !strings.Contains(got[1], want) {
			t.Errorf("db's filter saw %q, which lacks %q", got[1], want)
		}
	}
	// A denied line closes the connection before it reaches the app.
	got, err = talk("one", "DENY", "two")
	if err == nil || len(got) != 1 || got[0] != "ONE" {
		t.Errorf("a connection past a denied line: %q %v, want ONE then its end", got, err)
	}
	mu.Lock()
	seen := received.String()
	mu.Unlock()
	if strings.Contains(seen, "secret") || strings.Contains(seen, "DENY") || strings.Contains(seen, "two") {
		t.Errorf("db's app received %q past its filter", seen)
	}

	// The control plane's network plugin for web's outbound.
	central, _ := m.plugin(t, ctx, "web-lines", module, `"namespace": "default", "service": "web", "mode": "CLIENT", "type": "NETWORK"`)
	props := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := talk("PROPS")
			if err == nil && len(got) == 1 && strings.Contains(got[0], want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("PROPS answered %q %v, want %q\n%s", got, err, want, pair.output())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// web's filter answers PROPS first, from web's side.
	props("LISTENER=MESH-TCP-OUTBOUND CLUSTER=SVC.DB.DEFAULT")
	if _, err := admin.Delete(ctx, central, api.Options{}); err != nil {
		t.Fatal(err)
	}
	props("LISTENER=MESH-TCP-INBOUND")
}
