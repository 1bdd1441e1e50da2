package sidecar_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
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

	"github.com/gorilla/websocket"
	"github.com/miekg/dns"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/mesh/internal/netnstest"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
)

// nsDialer dials from inside a namespace, whatever thread the caller
// runs on.
func nsDialer(ns *netnstest.NS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// nsApp serves a plain HTTP app on 127.0.0.1:8080 of ns: /?to=X calls
// service X through the sidecar at 127.0.0.1:15001; anything else answers
// its name and the peer identity its sidecar saw.
func nsApp(t *testing.T, ns *netnstest.NS, name string) {
	t.Helper()
	var l net.Listener
	ns.MustDo(func() error {
		var err error
		l, err = net.Listen("tcp", "127.0.0.1:8080")
		return err
	})
	tr := &http.Transport{DialContext: nsDialer(ns), MaxIdleConnsPerHost: 64}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to := r.URL.Query().Get("to"); to != "" {
			req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:15001/from-"+name, nil)
			req.Host = to
			for _, h := range r.URL.Query()["hdr"] {
				k, v, _ := strings.Cut(h, ":")
				req.Header.Set(k, v)
			}
			resp, err := hc.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			w.WriteHeader(resp.StatusCode)
			fmt.Fprintf(w, "%s -> %s", name, b)
			return
		}
		if r.URL.Path == "/ws" {
			// A WebSocket echo that says who called.
			c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			for {
				typ, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				reply := fmt.Sprintf("%s (called by %s): %s", name, r.Header.Get(native.PeerIdentityHeader), msg)
				if c.WriteMessage(typ, []byte(reply)) != nil {
					return
				}
			}
		}
		fmt.Fprintf(w, "%s (called by %s)", name, r.Header.Get(native.PeerIdentityHeader))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
}

// nsTCPApp serves a plain TCP app on 127.0.0.1:8080 of ns that knows
// nothing of HTTP or the mesh: it answers each line with its name and the
// line, and closes once the client has finished sending.
func nsTCPApp(t *testing.T, ns *netnstest.NS, name string) {
	t.Helper()
	nsLineServer(t, ns, "127.0.0.1:8080", name, "")
}

// nsLineServer listens on addr in ns and answers each line of a
// connection with "name: line", after a greeting of its own when greet is
// not empty (a protocol whose server speaks first).
func nsLineServer(t *testing.T, ns *netnstest.NS, addr, name, greet string) {
	t.Helper()
	var l net.Listener
	ns.MustDo(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if greet != "" {
					if _, err := io.WriteString(c, greet+"\n"); err != nil {
						return
					}
				}
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintf(c, "%s: %s\n", name, sc.Text()); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { l.Close() })
}

// tcpCall connects from ns to addr, sends lines, ends its side, and
// returns everything it read until the other side closed.
func tcpCall(t *testing.T, ns *netnstest.NS, addr string, lines ...string) (string, error) {
	t.Helper()
	c, err := nsDialer(ns)(context.Background(), "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for _, l := range lines {
		if _, err := io.WriteString(c, l+"\n"); err != nil {
			return "", err
		}
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

// process runs the wasmgate binary inside a namespace until the test
// ends, then stops it with SIGTERM; its output is shown when the test
// fails, and read by outputOf.
func process(t *testing.T, ns *netnstest.NS, bin string, args ...string) *exec.Cmd {
	t.Helper()
	var out bytes.Buffer
	var mu sync.Mutex
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name(), bin}, args...)...)
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outputs.Store(cmd, func() string { mu.Lock(); defer mu.Unlock(); return out.String() })
	t.Cleanup(func() { outputs.Delete(cmd) })
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("%s %s:\n%s", ns.Name(), args[0], out.String())
			mu.Unlock()
		}
	})
	return cmd
}

// outputs holds, for each command process runs, what it wrote so far.
var outputs sync.Map // *exec.Cmd -> func() string

// outputOf is what cmd, run by process, wrote so far.
func outputOf(cmd *exec.Cmd) string {
	if f, ok := outputs.Load(cmd); ok {
		return f.(func() string)()
	}
	return ""
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func waitFor(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// wasmgateBin builds the binary once for the tests of the package;
// TestMain removes it.
func wasmgateBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "wasmgate-bin-"); binErr != nil {
			return
		}
		os.Chmod(binDir, 0o755)
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "wasmgate"), "github.com/wasmgate/wasmgate/cmd/wasmgate").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("building wasmgate: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "wasmgate")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// netnsMesh is the control plane in a namespace that routes between four
// others, each holding an app and its sidecar (web -> orders -> payments,
// and db, a plain TCP app that web and orders call),
// all as separate processes joined by veth pairs.
type netnsMesh struct {
	ns    map[string]*netnstest.NS
	addr  map[string]netip.Addr // the service's address
	gw    map[string]netip.Addr // the router's address on the service's link
	admin *api.Client
	start time.Time

	// sidecars are the sidecars' processes, by service.
	sidecars map[string]*exec.Cmd

	net   *netnstest.Net
	bin   string
	dir   string
	roots []byte // the trust bundle
}

// webUID, when not 0, runs web's sidecar as that user, with web's
// namespace intercepted by `wasmgate sidecar iptables`. webCalls, when
// given, are web's flags of the services it calls in place of
// "--calls orders,payments --tcp-calls db=15432".
func startNetnsMesh(t *testing.T, webUID int, webCalls ...string) *netnsMesh {
	tools := []string{"sysctl"}
	if webUID != 0 {
		tools = append(tools, "iptables", "setpriv")
	}
	n := netnstest.New(t, tools...)
	dir, err := os.MkdirTemp("", "wasmgate-netns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := wasmgateBin(t)
	start := time.Now()
	router := n.Namespace("cp")
	router.MustRun("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	names := []string{"web", "orders", "payments", "db"}
	m := &netnsMesh{ns: map[string]*netnstest.NS{}, addr: map[string]netip.Addr{}, gw: map[string]netip.Addr{}, start: start,
		sidecars: map[string]*exec.Cmd{}, net: n, bin: bin, dir: dir}
	ns, addr, gw := m.ns, m.addr, m.gw
	for _, name := range names {
		ns[name] = n.Namespace(name)
		gw[name], addr[name] = n.Link(router, ns[name])
		ns[name].MustRun("ip", "route", "add", "default", "via", gw[name].String())
	}
	m.ns["cp"] = router

	// The control plane, with its etcd and API on the router.
	keyFile := filepath.Join(dir, "secret.key")
	if err := os.WriteFile(keyFile, secret.NewKeyText(), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "cp")
	etcdAddr := gw["web"].String() + ":2379"
	apiArgs := []string{"controlplane", "--mesh", "--secret-key-file", keyFile, "--data-dir", data,
		"--etcd-listen-client", etcdAddr, "--etcd-listen-peer", "127.0.0.1:2380", "--listen", "0.0.0.0:9900", "--admin-token", adminToken}
	for _, name := range names {
		apiArgs = append(apiArgs, "--api-host", gw[name].String())
	}
	process(t, router, bin, apiArgs...)
	bundle := filepath.Join(data, "trust-bundle.pem")
	waitFor(t, "the control plane's trust bundle", 20*time.Second, func() bool { _, err := os.Stat(bundle); return err == nil })
	roots, _ := os.ReadFile(bundle)
	m.roots = roots
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	admin := &api.Client{Server: "https://" + gw["web"].String() + ":9900", Token: adminToken, HTTP: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: nsDialer(router), TLSClientConfig: &tls.Config{RootCAs: pool}}}}
	m.admin = admin
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitFor(t, "the control plane's API", 20*time.Second, func() bool { _, err := admin.Status(ctx); return err == nil })
	putPolicy(t, admin, "payments-callers", "namespace: default\nservice: payments\nrules:\n- from:\n  - principals: [spiffe://wasmgate.local/ns/default/sa/orders]\n")
	// db speaks opaque TCP: only web may connect.
	putPolicy(t, admin, "db-callers", "namespace: default\nservice: db\nrules:\n- from:\n  - principals: [spiffe://wasmgate.local/ns/default/sa/web]\n")

	calls := map[string]string{"web": "orders,payments", "orders": "payments", "payments": "", "db": ""}
	tcpCalls := map[string]string{"web": "db=15432", "orders": "db=15432"}
	for _, name := range names {
		tok, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: "default", ServiceAccount: name})
		if err != nil {
			t.Fatal(err)
		}
		if name == "db" {
			nsTCPApp(t, ns[name], name)
		} else {
			nsApp(t, ns[name], name)
		}
		own := filepath.Join(dir, name)
		if err := os.MkdirAll(own, 0o755); err != nil {
			t.Fatal(err)
		}
		myBundle := filepath.Join(own, "trust-bundle.pem")
		if err := os.WriteFile(myBundle, roots, 0o644); err != nil {
			t.Fatal(err)
		}
		// A sidecar gets no etcd endpoint: it registers through the
		// control plane's API with its workload certificate.
		args := []string{"run", "--sidecar", "--service", name, "--app-port", "8080",
			"--inbound", addr[name].String() + ":15006",
			"--identity-server", "https://" + gw[name].String() + ":9900", "--join-token", tok.Token,
			"--trust-bundle-file", myBundle, "--identity-dir", filepath.Join(own, "identity"),
			"--wasm-cache-dir", filepath.Join(own, "wasm"), "--cache-file", filepath.Join(own, "cache"),
			"--registration-ttl", "2s", "--access-log", "", "--log-level", "info",
			"--local-config", localTelemetry(t, own)}
		switch {
		case name == "web" && webCalls != nil:
			args = append(args, webCalls...)
		default:
			if calls[name] != "" {
				args = append(args, "--calls", calls[name])
			}
			if tcpCalls[name] != "" {
				args = append(args, "--tcp-calls", tcpCalls[name])
			}
		}
		if name == "db" {
			args = append(args, "--protocol", "tcp")
		}
		if name == "web" && webUID != 0 {
			if err := os.Chown(own, webUID, webUID); err != nil {
				t.Fatal(err)
			}
			// In web's namespace db's name resolves to a cluster IP, as a
			// Kubernetes Service's does: `ip netns exec` puts this file
			// over /etc/hosts for the processes it starts.
			etc := filepath.Join("/etc/netns", ns[name].Name())
			if err := os.MkdirAll(etc, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(etc) })
			if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte("127.0.0.1 localhost\n"+dbClusterIP+" db db.default db.default.svc\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			ns[name].MustRun(bin, "sidecar", "iptables", "--uid", strconv.Itoa(webUID), "--inbound-port", "15006", "--outbound-port", "15001",
				"--exclude-outbound-ports", "9900,2379", "--dns-port", "15053")
			args = append(args, "--dns", "127.0.0.1:15053")
			args = append([]string{"--reuid", strconv.Itoa(webUID), "--regid", strconv.Itoa(webUID), "--clear-groups", bin}, args...)
			m.sidecars[name] = process(t, ns[name], "setpriv", args...)
			continue
		}
		m.sidecars[name] = process(t, ns[name], bin, args...)
	}
	for _, name := range names {
		waitFor(t, name+" registered", 30*time.Second, func() bool {
			l, err := admin.Endpoints(ctx, name+".default")
			return err == nil && len(l.Items) == 1
		})
	}
	t.Logf("control plane and four sidecars up in %v", time.Since(start))
	return m
}

// lookup asks for the address of name as an app of service from does:
// of a resolver at its router's address, port 53, which the interception
// sends to its sidecar's DNS.
func (m *netnsMesh) lookup(from, name string) (netip.Addr, error) {
	c, err := nsDialer(m.ns[from])(context.Background(), "udp", m.gw[from].String()+":53")
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	q := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 3 * time.Second}).ExchangeWithConn(q, &dns.Conn{Conn: c})
	if err != nil {
		return netip.Addr{}, err
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ip, _ := netip.AddrFromSlice(a.A)
			return ip.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s: no address (rcode %s)", name, dns.RcodeToString[r.Rcode])
}

// dbClusterIP is the address db's name resolves to in web's namespace in
// TestNetnsTransparent: no host has it; only the interception reaches it.
const dbClusterIP = "10.96.0.10"

// TestNetnsMesh: calls by name over mTLS, a denial, a refused plain-text
// inbound, a live policy change under load, and no plain text on the wire.
func TestNetnsMesh(t *testing.T) {
	m := startNetnsMesh(t, 0)
	ns, addr, gw, admin, start, router := m.ns, m.addr, m.gw, m.admin, m.start, m.ns["cp"]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	user := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DialContext: nsDialer(ns["web"]), MaxIdleConnsPerHost: 16}}
	get := func(to string, hdr ...string) (int, string) {
		t.Helper()
		u := "http://127.0.0.1:8080/?to=" + to
		for _, h := range hdr {
			u += "&hdr=" + h
		}
		resp, err := user.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// Each sidecar runs one thread (concurrency's default) unless
	// $GOMAXPROCS, which the sidecars inherit, says otherwise, and says so.
	threads := "1"
	if n := os.Getenv("GOMAXPROCS"); n != "" {
		threads = n
	}
	for name, cmd := range m.sidecars {
		if out := outputOf(cmd); !strings.Contains(out, "sidecar serving") || !strings.Contains(out, `"threads": `+threads+`}`) {
			t.Errorf("%s's sidecar does not say it serves with %s threads:\n%s", name, threads, out)
		}
	}

	// Outbound by name becomes the peer's inbound, once orders' endpoint
	// reached web's sidecar.
	waitFor(t, "web -> orders", 10*time.Second, func() bool { st, _ := get("orders"); return st == 200 })
	if st, body := get("orders.default.svc"); st != 200 || body != "web -> orders (called by spiffe://wasmgate.local/ns/default/sa/web)" {
		t.Fatalf("web -> orders: %d %q", st, body)
	}
	// Denied by payments' policy, whatever web claims to be, once
	// payments' endpoint reached web's sidecar too (it registers apart
	// from orders: until then the call is 503 no_healthy_upstream).
	spoof := native.PeerIdentityHeader + ":spiffe://wasmgate.local/ns/default/sa/orders"
	waitFor(t, "payments' endpoint at web", 10*time.Second, func() bool { st, _ := get("payments", spoof); return st != 503 })
	if st, body := get("payments", spoof); st != 403 || !strings.Contains(body, "RBAC: access denied") {
		t.Fatalf("web -> payments: %d %q", st, body)
	}
	// The denial is a decision record of payments' sidecar (its
	// --local-config sends them to a file), naming web by its certificate.
	waitFor(t, "the denial's decision record at payments", 10*time.Second, func() bool {
		return hasRecord(t, filepath.Join(m.dir, "payments", "records.log"), map[string]string{"kind": "decision", "verdict": "deny",
			"destination": "payments.default", "source_identity": "spiffe://wasmgate.local/ns/default/sa/web"})
	})
	// Plain text to a strict inbound, from web's namespace: refused.
	c, err := nsDialer(ns["web"])(ctx, "tcp", addr["orders"].String()+":15006")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
	b, _ := io.ReadAll(c)
	c.Close()
	if bytes.Contains(b, []byte("HTTP/1.1 200")) || bytes.Contains(b, []byte("orders (called by")) {
		t.Fatalf("a plain-text request to a strict inbound was served: %q", b)
	}

	// From here on, what crosses orders' link is between sidecars only.
	capture := router.Capture(gw["orders"], 0)

	// A WebSocket from web's app through both sidecars to orders' app:
	// the upgrade passes orders' policy, then the frames are relayed (the
	// hop between sidecars is HTTP/1.1 over mTLS for an upgrade). web may
	// not call payments, so its upgrade is refused with 403.
	ws := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return nsDialer(ns["web"])(ctx, network, "127.0.0.1:15001")
	}}
	wc, resp, err := ws.Dial("ws://orders/ws", nil)
	if err != nil {
		t.Fatalf("WebSocket web -> orders: %v (%v)", err, resp)
	}
	for _, msg := range []string{"hello over a websocket", "and again"} {
		if err := wc.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		wc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, got, err := wc.ReadMessage()
		if want := "orders (called by spiffe://wasmgate.local/ns/default/sa/web): " + msg; err != nil || string(got) != want {
			t.Fatalf("WebSocket echo: %q %v, want %q", got, err, want)
		}
	}
	wc.Close()
	if _, resp, err := ws.Dial("ws://payments/ws", nil); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("WebSocket web -> payments: %v %v, want a 403 at the upgrade", err, resp)
	}

	// A policy change through the API under load: no allowed request fails.
	var stop atomic.Bool
	var failed, done atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				resp, err := user.Get("http://127.0.0.1:8080/?to=orders")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				done.Add(1)
			}
		}()
	}
	changed := time.Now()
	putPolicy(t, admin, "payments-callers", "namespace: default\nservice: payments\nrules:\n- from:\n  - principals: [spiffe://wasmgate.local/ns/default/sa/orders, spiffe://wasmgate.local/ns/default/sa/web]\n")
	waitFor(t, "the policy change on payments' sidecar", 10*time.Second, func() bool { st, _ := get("payments"); return st == 200 })
	took := time.Since(changed)
	time.Sleep(500 * time.Millisecond) // more load on the new policy
	stop.Store(true)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during the policy change", failed.Load(), done.Load())
	}
	t.Logf("the policy change took effect in %v; %d requests under load, none failed", took, done.Load())

	capture.Stop()
	if capture.Frames() == 0 {
		t.Fatal("the capture saw no frame between the sidecars")
	}
	for _, plain := range []string{"/from-web", "HTTP/1.1", "spiffe://wasmgate.local/ns/default/sa/web", "hello over a websocket", "websocket"} {
		if capture.Contains([]byte(plain)) {
			t.Fatalf("%q crossed the wire in plain text", plain)
		}
	}
	t.Logf("%d frames (%d bytes) between the sidecars, none in plain text; the test took %v", capture.Frames(), capture.Len(), time.Since(start))
}

// TestNetnsTCP: db's app speaks plain TCP and knows nothing of the mesh.
// web's app reaches it through a local port of its sidecar, relayed over
// mTLS; orders, which db's policy does not name, has its connections
// closed by db's sidecar; a policy change applies to the next connection;
// nothing crosses db's link in plain text.
func TestNetnsTCP(t *testing.T) {
	m := startNetnsMesh(t, 0)
	ns, admin := m.ns, m.admin
	capture := m.ns["cp"].Capture(m.gw["db"], 0)
	call := func(from string, lines ...string) string {
		t.Helper()
		out, err := tcpCall(t, ns[from], "127.0.0.1:15432", lines...)
		if err != nil {
			t.Fatalf("%s -> db: %v", from, err)
		}
		return out
	}
	// Until web's sidecar knows db, the relay resets the connection: wait
	// for an answer without failing on that.
	waitFor(t, "web -> db", 10*time.Second, func() bool {
		out, err := tcpCall(t, ns["web"], "127.0.0.1:15432", "ping")
		return err == nil && out == "db: ping\n"
	})
	if got := call("web", "select 1 -- from web", "select 2 -- from web"); got != "db: select 1 -- from web\ndb: select 2 -- from web\n" {
		t.Fatalf("web -> db: %q", got)
	}
	// orders is allowed for a while, so that its refusal afterwards is
	// the policy's, not a sidecar that does not know db yet: until orders'
	// sidecar has db's endpoint it resets the connection, as web's did.
	putPolicy(t, admin, "db-callers", "namespace: default\nservice: db\nrules:\n- from:\n  - principals: [spiffe://wasmgate.local/ns/default/sa/web, spiffe://wasmgate.local/ns/default/sa/orders]\n")
	waitFor(t, "orders -> db allowed", 10*time.Second, func() bool {
		out, err := tcpCall(t, ns["orders"], "127.0.0.1:15432", "ping")
		return err == nil && out == "db: ping\n"
	})
	// Only web again; a rule of HTTP methods cannot allow a connection.
	putPolicy(t, admin, "db-callers", "namespace: default\nservice: db\nrules:\n- from:\n  - principals: [spiffe://wasmgate.local/ns/default/sa/web]\n"+
		"- from:\n  - principals: [spiffe://wasmgate.local/ns/default/sa/orders]\n  to:\n  - methods: [GET]\n")
	// A refused connection is closed by db's sidecar, whether orders' app
	// then reads an end or a reset: what matters is that db never answers.
	waitFor(t, "orders -> db denied", 10*time.Second, func() bool {
		out, _ := tcpCall(t, ns["orders"], "127.0.0.1:15432", "select 1 -- from orders")
		return out == ""
	})
	if got := call("web", "select 3 -- from web"); got != "db: select 3 -- from web\n" {
		t.Fatalf("web -> db after the change: %q", got)
	}
	// The relays count their connections in the sidecars' metrics.
	metricsOf := func(ns *netnstest.NS) string {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: nsDialer(ns)}}
		resp, err := hc.Get("http://127.0.0.1:9901/metrics")
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for ns, series := range map[string]string{
		"web": `wasmgate_tcp_connections_total{cluster="svc.db.default",listener="mesh-tcp-outbound"}`,
		"db":  `wasmgate_tcp_connections_total{cluster="app",listener="mesh-tcp-inbound"}`,
	} {
		if m := metricsOf(m.ns[ns]); !strings.Contains(m, series) {
			t.Errorf("%s's sidecar has no %s:\n%s", ns, series, grepLines(m, "wasmgate_tcp_"))
		}
	}
	capture.Stop()
	if capture.Frames() == 0 {
		t.Fatal("the capture saw no frame on db's link")
	}
	for _, plain := range []string{"select 1 -- from web", "db: select", "from orders", "ping"} {
		if capture.Contains([]byte(plain)) {
			t.Fatalf("%q crossed db's link in plain text", plain)
		}
	}
	t.Logf("%d frames (%d bytes) on db's link, none in plain text", capture.Frames(), capture.Len())
}

// TestNetnsTransparent: with web's namespace intercepted by `wasmgate
// sidecar iptables` and web's sidecar running as its own user, the app
// calls orders at an address of its own choosing, knowing nothing of the
// sidecar; the call is redirected to the outbound listener, routed by
// name, and arrives over mTLS with web's identity.
func TestNetnsTransparent(t *testing.T) {
	const sidecarUID = 1337
	m := startNetnsMesh(t, sidecarUID)
	app := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: nsDialer(m.ns["web"]), DisableKeepAlives: true}}
	getAt := func(addr, host string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		req.Host = host
		resp, err := app.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	get := func(host string) (int, string, error) {
		// Port 80 of orders' address: nothing listens there; only the
		// redirect makes this call work.
		return getAt(m.addr["orders"].String()+":80", host)
	}
	waitFor(t, "an intercepted call to orders", 10*time.Second, func() bool { st, _, _ := get("orders"); return st == 200 })
	if st, body, err := get("orders.default.svc"); err != nil || st != 200 || body != "orders (called by spiffe://wasmgate.local/ns/default/sa/web)" {
		t.Fatalf("intercepted web -> orders: %d %q %v", st, body, err)
	}
	// web's sidecar learns payments' endpoints on its own time (503 until
	// then); the policy's refusal is what is checked.
	waitFor(t, "an intercepted call to payments", 10*time.Second, func() bool { st, _, _ := get("payments"); return st != 503 })
	if st, body, err := get("payments"); err != nil || st != 403 {
		t.Fatalf("intercepted web -> payments: %d %q %v", st, body, err)
	}
	// A Host that names no service: the original destination, orders'
	// address, does.
	if st, body, err := get("example.com"); err != nil || st != 200 || body != "orders (called by spiffe://wasmgate.local/ns/default/sa/web)" {
		t.Fatalf("intercepted call by orders' address: %d %q %v", st, body, err)
	}
	// Neither the Host nor the address is of the mesh: registry_only.
	req, _ := http.NewRequest(http.MethodGet, "http://"+m.gw["web"].String()+":80/", nil)
	req.Host = "example.com"
	if resp, err := app.Do(req); err != nil || resp.StatusCode != 502 {
		t.Fatalf("intercepted call outside the mesh: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Opaque TCP to db's address, on its app's port: the sidecar finds db
	// by the original destination and relays over mTLS.
	out, err := tcpCall(t, m.ns["web"], m.addr["db"].String()+":8080", "select 1 -- intercepted")
	if err != nil || out != "db: select 1 -- intercepted\n" {
		t.Fatalf("intercepted web -> db: %q %v", out, err)
	}
	// By its name: the app connects to the cluster IP db's name resolves
	// to; web's sidecar resolved the name too and relays to db.
	waitFor(t, "an intercepted connection to db's cluster IP", 10*time.Second, func() bool {
		out, err := tcpCall(t, m.ns["web"], dbClusterIP+":5432", "select 2 -- by name")
		return err == nil && out == "db: select 2 -- by name\n"
	})
	// With the sidecar's DNS (--dns, and --dns-port in the interception),
	// a name needs no hosts file: the app's query, to a resolver at any
	// address, is answered by web's sidecar with the service's virtual
	// address, and a connection to that address is the sidecar's to
	// route, HTTP by its Host and TCP to its service.
	lookup := func(name string) (netip.Addr, error) { return m.lookup("web", name) }
	var ordersVIP, dbVIP netip.Addr
	waitFor(t, "the names of orders and db in web's DNS", 10*time.Second, func() bool {
		var err1, err2 error
		ordersVIP, err1 = lookup("orders")
		dbVIP, err2 = lookup("db.default.svc.cluster.local")
		return err1 == nil && err2 == nil
	})
	if !registry.VIPPool.Contains(ordersVIP) || !registry.VIPPool.Contains(dbVIP) || ordersVIP == dbVIP {
		t.Fatalf("virtual addresses: orders %s, db %s", ordersVIP, dbVIP)
	}
	if st, body, err := getAt(ordersVIP.String()+":80", "orders"); err != nil || st != 200 || body != "orders (called by spiffe://wasmgate.local/ns/default/sa/web)" {
		t.Fatalf("web -> orders by its virtual address: %d %q %v", st, body, err)
	}
	if out, err := tcpCall(t, m.ns["web"], dbVIP.String()+":5432", "select 3 -- by its virtual address"); err != nil || out != "db: select 3 -- by its virtual address\n" {
		t.Fatalf("web -> db by its virtual address: %q %v", out, err)
	}
	// A TCP server outside the mesh, on the router: a connection that does
	// not speak HTTP (here a TLS record's first bytes) is refused by
	// registry_only, and a flow record says why.
	outside := m.gw["web"].String() + ":7000"
	nsLineServer(t, m.ns["cp"], outside, "outside", "")
	if out, _ := tcpCall(t, m.ns["web"], outside, "\x16\x03\x01 not HTTP"); out != "" {
		t.Fatalf("registry_only let a connection outside the mesh through: %q", out)
	}
	records := filepath.Join(m.dir, "web", "records.log")
	waitFor(t, "web's flow record of the refusal", 10*time.Second, func() bool {
		b, _ := os.ReadFile(records)
		return bytes.Contains(b, []byte(`"destination_address":"`+outside+`"`)) && bytes.Contains(b, []byte(`"close_reason":"outside_mesh"`))
	})
	web := m.gw["web"].String() + ":7080"
	m.ns["cp"].MustDo(func() error {
		l, err := net.Listen("tcp", web)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a web site outside the mesh") })}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		return nil
	})
	getOutside := func() (int, string) {
		resp, err := app.Get("http://" + web + "/")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := getOutside(); st != 502 {
		t.Fatalf("registry_only, an HTTP call outside the mesh: %d %q", st, body)
	}

	// The namespace's outbound traffic policy, applied in the control
	// plane, turns web's sidecar to allow_any live: the same bytes reach
	// the server now, a server that speaks first greets the app, and an
	// HTTP call outside the mesh is passed on.
	otp := resource.Ref{Kind: resource.OutboundTrafficPolicies, Name: "default-egress"}
	if _, err := m.admin.Put(context.Background(), otp, []byte("namespace: default\nmode: allow_any\n"), api.Options{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "allow_any in web's sidecar", 10*time.Second, func() bool {
		out, _ := tcpCall(t, m.ns["web"], outside, "\x16\x03\x01 not HTTP")
		return out == "outside: \x16\x03\x01 not HTTP\n"
	})
	greeter := m.gw["web"].String() + ":7001"
	nsLineServer(t, m.ns["cp"], greeter, "greeter", "220 greeter ready")
	conn, err := nsDialer(m.ns["web"])(context.Background(), "tcp", greeter)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(conn)
	if l, err := rd.ReadString('\n'); err != nil || l != "220 greeter ready\n" {
		t.Fatalf("a server that speaks first, through allow_any: %q %v", l, err)
	}
	io.WriteString(conn, "EHLO web\n")
	if l, err := rd.ReadString('\n'); err != nil || l != "greeter: EHLO web\n" {
		t.Fatalf("after the greeting: %q %v", l, err)
	}
	if st, body := getOutside(); st != 200 || body != "a web site outside the mesh" {
		t.Fatalf("allow_any, an HTTP call outside the mesh: %d %q", st, body)
	}
	// Deleted, the sidecar's own setting, registry_only, is back.
	if _, err := m.admin.Delete(context.Background(), otp, api.Options{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "registry_only in web's sidecar again", 10*time.Second, func() bool {
		out, _ := tcpCall(t, m.ns["web"], outside, "\x16\x03\x01 not HTTP")
		st, _ := getOutside()
		return out == "" && st == 502
	})

	// A service entry lets one outside host through under registry_only:
	// the app's own TLS to it, by the server name of its ClientHello,
	// intercepted and relayed unchanged; another name is refused.
	apiAddr := m.gw["web"].String() + ":7443"
	m.ns["cp"].MustDo(func() error {
		l, err := tls.Listen("tcp", apiAddr, &tls.Config{Certificates: []tls.Certificate{selfSigned(t, "api.outside.test")}})
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "an API outside the mesh") })}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		return nil
	})
	tlsGet := func(serverName string) (string, error) {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: nsDialer(m.ns["web"]),
			TLSClientConfig: &tls.Config{ServerName: serverName, InsecureSkipVerify: true}}}
		resp, err := client.Get("https://" + apiAddr + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	if got, err := tlsGet("api.outside.test"); err == nil {
		t.Fatalf("registry_only let TLS outside the mesh through before any entry: %q", got)
	}
	entry := resource.Ref{Kind: resource.ServiceEntries, Name: "outside-api"}
	if _, err := m.admin.Put(context.Background(), entry, []byte("namespace: default\nhosts: [api.outside.test]\nports: [7443]\n"), api.Options{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the service entry in web's sidecar", 10*time.Second, func() bool {
		got, err := tlsGet("api.outside.test")
		return err == nil && got == "an API outside the mesh"
	})
	if got, err := tlsGet("other.outside.test"); err == nil {
		t.Fatalf("a server name no entry admits went through: %q", got)
	}
}

// TestNetnsTransparentCallsAll: web's sidecar follows every service of
// the mesh (`--calls '*'`), intercepted and answering its app's DNS, and
// no flag of it names db, a service of opaque TCP. db's sidecar says so
// when it registers (protocol tcp), so web's relays connections to db's
// virtual address, or to db's own address, over mTLS instead of routing
// them as HTTP; orders, an HTTP service, is routed by name as before.
func TestNetnsTransparentCallsAll(t *testing.T) {
	const sidecarUID = 1337
	m := startNetnsMesh(t, sidecarUID, "--calls", "*")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if l, err := m.admin.Endpoints(ctx, "db.default"); err != nil || len(l.Items) != 1 || l.Items[0].Protocol != registry.ProtocolTCP {
		t.Fatalf("db's registration: %+v %v", l, err)
	}
	if l, err := m.admin.Endpoints(ctx, "orders.default"); err != nil || len(l.Items) != 1 || l.Items[0].Protocol != "" {
		t.Fatalf("orders' registration: %+v %v", l, err)
	}
	var ordersVIP, dbVIP netip.Addr
	waitFor(t, "the names of orders and db in web's DNS", 10*time.Second, func() bool {
		var err1, err2 error
		ordersVIP, err1 = m.lookup("web", "orders")
		dbVIP, err2 = m.lookup("web", "db.default.svc")
		return err1 == nil && err2 == nil
	})
	waitFor(t, "web -> db by its virtual address", 10*time.Second, func() bool {
		out, err := tcpCall(t, m.ns["web"], dbVIP.String()+":5432", "select 1 -- by its virtual address")
		return err == nil && out == "db: select 1 -- by its virtual address\n"
	})
	if out, err := tcpCall(t, m.ns["web"], m.addr["db"].String()+":8080", "select 2 -- by its address"); err != nil || out != "db: select 2 -- by its address\n" {
		t.Fatalf("web -> db by its address: %q %v", out, err)
	}
	app := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: nsDialer(m.ns["web"]), DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodGet, "http://"+ordersVIP.String()+"/", nil)
	req.Host = "orders"
	resp, err := app.Do(req)
	if err != nil {
		t.Fatalf("web -> orders by its virtual address: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "orders (called by spiffe://wasmgate.local/ns/default/sa/web)" {
		t.Fatalf("web -> orders by its virtual address: %d %q", resp.StatusCode, body)
	}
	// db's sidecar saw web's identity: its flow records name it.
	records := filepath.Join(m.dir, "db", "records.log")
	waitFor(t, "db's flow record of web's connection", 10*time.Second, func() bool {
		b, _ := os.ReadFile(records)
		return bytes.Contains(b, []byte(`"source_identity":"spiffe://wasmgate.local/ns/default/sa/web"`))
	})
}

// selfSigned is a certificate for name, signed by its own key.
func selfSigned(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// localTelemetry writes a sidecar's --local-config: its records (access,
// decision, flow, event) to dir/records.log.
func localTelemetry(t testing.TB, dir string) string {
	t.Helper()
	file := filepath.Join(dir, "telemetry.yaml")
	doc := "telemetry:\n  sinks:\n  - {name: file, type: file, file: {path: " + filepath.Join(dir, "records.log") + "}}\n" +
		"  access: [file]\n  decision: [file]\n  flow: [file]\n  event: [file]\n"
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
