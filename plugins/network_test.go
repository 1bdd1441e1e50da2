package plugins_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
)

// networkConfig is a TCP listener whose connections go to {{echo}}
// through the tcpfilter plugin (a network filter built with the
// proxy-wasm Go SDK).
const networkConfig = `
listeners:
- name: main
  address: 127.0.0.1:0
  tcp_proxy:
    cluster: echo
    filters: [{plugin: tcpfilter}]
clusters:
- name: echo
  metadata: {filter_metadata: {location: {region: eu-west-3}}}
  endpoints: [{address: "{{echo}}"}]
plugins:
- name: tcpfilter
  file: {{wasm}}
`

// echoServer echoes every connection's bytes back until the client's
// end, then closes; it records what each connection sent.
type echoServer struct {
	ln   net.Listener
	mu   sync.Mutex
	seen []string
}

func newEchoServer(t *testing.T) *echoServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var got strings.Builder
				_, _ = io.Copy(io.MultiWriter(c, &got), c)
				e.mu.Lock()
				e.seen = append(e.seen, got.String())
				e.mu.Unlock()
			}()
		}
	}()
	return e
}

func (e *echoServer) received() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.seen...)
}

// TestNetworkFilter: a TCP listener carries a connection's bytes to its
// cluster and back through a network filter, which Envoy's way sees and
// changes them: it holds a partial line until the rest arrives, rewrites
// the client's bytes and the upstream's, holds a line until its tick
// continues the connection, reads the connection's properties (and finds
// no HTTP request), and closes a connection before a line reaches the
// upstream; its close and done callbacks run once per connection, with
// the side that closed.
func TestNetworkFilter(t *testing.T) {
	wasmFile, _ := filepath.Abs("../proxy/wasm/testdata/tcpfilter.wasm")
	echo := newEchoServer(t)
	p := e2e.Start(t, networkConfig, map[string]string{"wasm": wasmFile, "echo": echo.ln.Addr().String()})
	addr := strings.TrimPrefix(p.URL, "http://")

	dial := func() (*net.TCPConn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c.(*net.TCPConn), bufio.NewReader(c)
	}
	line := func(r *bufio.Reader) string {
		t.Helper()
		s, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, s)
		}
		return s
	}

	c, r := dial()
	io.WriteString(c, "hello\n")
	if got := line(r); got != "HELLO\n" {
		t.Errorf("echo: %q, want HELLO", got)
	}
	// A partial line is held until its end comes.
	io.WriteString(c, "par")
	time.Sleep(50 * time.Millisecond)
	io.WriteString(c, "tial secret\n")
	if got := line(r); got != "PARTIAL ******\n" {
		t.Errorf("partial line: %q, want PARTIAL ******", got)
	}
	// A HOLD line is held until the plugin's next tick (every 20 ms), so
	// it may be let go at once or 20 ms later: how long it took says
	// nothing. That it was held is what came back, and what the upstream
	// received (below): the tick rewrote the bytes it held before it let
	// them go, and the HOLD line itself never went upstream.
	io.WriteString(c, "HOLD\n")
	if got := line(r); got != "HELD BY TICK\n" {
		t.Errorf("held line: %q, want HELD BY TICK", got)
	}
	io.WriteString(c, "PROPS\n")
	props := line(r)
	for _, want := range []string{"LISTENER=MAIN", "CLUSTER=ECHO", "REGION=EU-WEST-3", "SOURCE=127.0.0.1",
		"UPSTREAM=" + echo.ln.Addr().String(), "MTLS=FALSE",
		"REQUEST_PATH=ERROR STATUS RETURNED BY HOST: NOT FOUND", "HEADERS=ERROR STATUS RETURNED BY HOST: NOT FOUND"} {
		if !strings.Contains(props, want) {
			t.Errorf("properties %q lack %q", props, want)
		}
	}
	// The client's end reaches the upstream, whose end reaches the
	// client: half-closes both ways.
	io.WriteString(c, "bye\n")
	c.CloseWrite()
	if got := line(r); got != "BYE\n" {
		t.Errorf("last line: %q", got)
	}
	if rest, err := io.ReadAll(r); err != nil || len(rest) > 0 {
		t.Errorf("after the upstream's end: %q, %v", rest, err)
	}

	// DENY closes the connection; the line never reaches the upstream.
	c2, r2 := dial()
	io.WriteString(c2, "one\n")
	if got := line(r2); got != "ONE\n" {
		t.Errorf("before the denial: %q", got)
	}
	io.WriteString(c2, "DENY\n")
	if rest, err := io.ReadAll(r2); err != nil || len(rest) > 0 {
		t.Errorf("after the denial: %q, %v", rest, err)
	}

	// As in Envoy, on_upstream_connection_close comes with the end of the
	// upstream's bytes: the denied connection's upstream never ended.
	waitFor(t, func() bool { return p.Metric("done") == 2 })
	for name, want := range map[string]float64{"connections": 2, "closes_remote": 1, "closes_local": 1, "upstream_closes": 1} {
		if got := p.Metric(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	waitFor(t, func() bool { return len(echo.received()) == 2 })
	for _, got := range echo.received() {
		if strings.Contains(got, "DENY") || strings.Contains(got, "secret") || strings.Contains(got, "HOLD") {
			t.Errorf("the upstream received %q", got)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNetworkFilterFailure: a network filter that fails closes its
// connection when fail_closed, and lets it go on without the filter when
// fail_open; either way other connections are served, by a rebuilt
// instance.
func TestNetworkFilterFailure(t *testing.T) {
	wasmFile, _ := filepath.Abs("../proxy/wasm/testdata/tcpfilter.wasm")
	for _, policy := range []string{"fail_closed", "fail_open"} {
		t.Run(policy, func(t *testing.T) {
			echo := newEchoServer(t)
			p := e2e.Start(t, networkConfig+"  failure_policy: "+policy+"\n",
				map[string]string{"wasm": wasmFile, "echo": echo.ln.Addr().String()})
			addr := strings.TrimPrefix(p.URL, "http://")
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			io.WriteString(c, "PANIC\n")
			if policy == "fail_closed" {
				if rest, err := io.ReadAll(r); err != nil || len(rest) > 0 {
					t.Errorf("after the failure: %q, %v; want the connection closed", rest, err)
				}
			} else {
				// Without the filter: the line passes as it is, and the
				// answer is no longer upper-cased.
				if got, err := r.ReadString('\n'); err != nil || got != "PANIC\n" {
					t.Errorf("after the failure: %q, %v", got, err)
				}
				io.WriteString(c, "after\n")
				if got, err := r.ReadString('\n'); err != nil || got != "after\n" {
					t.Errorf("then: %q, %v", got, err)
				}
			}
			c2, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			_ = c2.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c2, "next\n")
			if got, err := bufio.NewReader(c2).ReadString('\n'); err != nil || got != "NEXT\n" {
				t.Errorf("another connection: %q, %v", got, err)
			}
		})
	}
}

// TestSDKNetworkFilter: a network filter written with wasmgate's own SDK
// (sdk/examples/linefilter, built here with the Go toolchain) holds a
// line until its end, lets allowed lines through, and closes the
// connection before a denied one reaches the upstream.
func TestSDKNetworkFilter(t *testing.T) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain to build the example")
	}
	wasmFile := filepath.Join(t.TempDir(), "linefilter.wasm")
	cmd := exec.Command(gotool, "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false", "-o", wasmFile, ".")
	cmd.Dir = "../sdk/examples/linefilter"
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the example: %v\n%s", err, b)
	}
	echo := newEchoServer(t)
	cfg := strings.Replace(networkConfig, "tcpfilter", "linefilter", 2) + `  config: {"deny": ["FLUSHALL", "config"]}` + "\n"
	p := e2e.Start(t, cfg, map[string]string{"wasm": wasmFile, "echo": echo.ln.Addr().String()})
	c, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	io.WriteString(c, "GET ke")
	time.Sleep(20 * time.Millisecond)
	io.WriteString(c, "y\r\nSET a 1\r\n")
	for _, want := range []string{"GET key\r\n", "SET a 1\r\n"} {
		if got, err := r.ReadString('\n'); err != nil || got != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	io.WriteString(c, "Config set dir /tmp\r\n")
	if rest, err := io.ReadAll(r); err != nil || len(rest) > 0 {
		t.Errorf("after a denied line: %q, %v; want the connection closed", rest, err)
	}
	waitFor(t, func() bool { return p.Metric("linefilter.denied") == 1 })
	if n := p.Metric("linefilter.connections"); n != 1 {
		t.Errorf("connections counted %v", n)
	}
	waitFor(t, func() bool { return len(echo.received()) == 1 })
	if got := echo.received()[0]; got != "GET key\r\nSET a 1\r\n" {
		t.Errorf("the upstream received %q", got)
	}
}

// TestNetworkFilterConcurrent: connections in parallel through a network
// filter each get their own context and their own bytes back, whatever
// instance of the plugin's pool serves them.
func TestNetworkFilterConcurrent(t *testing.T) {
	wasmFile, _ := filepath.Abs("../proxy/wasm/testdata/tcpfilter.wasm")
	echo := newEchoServer(t)
	p := e2e.Start(t, networkConfig, map[string]string{"wasm": wasmFile, "echo": echo.ln.Addr().String()})
	addr := strings.TrimPrefix(p.URL, "http://")
	const conns, lines = 32, 50
	errs := make(chan error, conns)
	for i := range conns {
		go func() {
			errs <- func() error {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return err
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				r := bufio.NewReader(c)
				for j := range lines {
					msg := fmt.Sprintf("conn %d line %d\n", i, j)
					if _, err := io.WriteString(c, msg); err != nil {
						return err
					}
					got, err := r.ReadString('\n')
					if err != nil {
						return err
					}
					if got != strings.ToUpper(msg) {
						return fmt.Errorf("sent %q, got %q", msg, got)
					}
				}
				return nil
			}()
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	waitFor(t, func() bool { return p.Metric("done") == conns })
	if n := p.Metric("connections"); n != conns {
		t.Errorf("connections %v, want %d", n, conns)
	}
}
