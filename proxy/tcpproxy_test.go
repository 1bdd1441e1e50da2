package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/internal/testpki"
	"github.com/wasmgate/wasmgate/proxy/wasm"
)

// tcpEcho is a TCP server that greets each connection with its name and
// a newline, then echoes what it reads until the client's end, then
// closes.
func tcpEcho(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, name+"\n")
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

const tcpProxyConfig = `
access_log:
  path: "{{log}}"
  fields: [start_time, downstream_remote_address, protocol, listener, upstream_cluster, upstream_host, bytes_received, bytes_sent, duration_ms, response_flags, details]
listeners:
- name: tcp
  address: 127.0.0.1:0
  tcp_proxy: {cluster: {{cluster}}}
clusters:
- name: echo
  endpoints: [{address: "{{dead}}"}, {address: "{{echo}}"}]
- name: other
  endpoints: [{address: "{{other}}"}]
- name: nowhere
  endpoints: [{address: "{{dead}}"}]
`

// greet dials the TCP listener named tcp and reads the upstream's
// greeting.
func greet(t *testing.T, e *env) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	return greetAt(t, e.srv.Addr("tcp").String())
}

// greetAt dials addr and reads the upstream's greeting.
func greetAt(t *testing.T, addr string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return c, r, strings.TrimSpace(name)
}

// TestTCPProxy: a TCP listener carries bytes both ways to an endpoint of
// its cluster, trying another when one cannot be reached, passes
// half-closes on, moves megabytes in both directions at once without
// loss, and a reload sends new connections to the new cluster while an
// open one stays where it is.
func TestTCPProxy(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "access.log")
	v := vars{"echo": tcpEcho(t, "echo"), "other": tcpEcho(t, "other"), "dead": deadAddr(t), "cluster": "echo", "log": logFile}
	e := newEnv(t, tcpProxyConfig, v)

	// Round robin puts every other connection on the dead endpoint
	// first: each reaches the echo all the same.
	for range 6 {
		c, _, name := greet(t, e)
		if name != "echo" {
			t.Fatalf("greeting %q", name)
		}
		c.Close()
	}

	c, r, _ := greet(t, e)
	const size = 8 << 20
	sent := make([]byte, size)
	rand.Read(sent)
	go func() {
		_, _ = c.Write(sent)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading the echo: %v after %d bytes", err, len(got))
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(sent))
	}
	if n := gatheredSum(t, e, "wasmgate_tcp_connections_total"); n != 7 {
		t.Errorf("connections counted: %v, want 7", n)
	}
	if n := gatheredSum(t, e, "wasmgate_upstream_errors_total"); n < 3 {
		t.Errorf("connect failures counted: %v, want at least 3 (every other connection tried the dead endpoint)", n)
	}
	if n := gatheredSum(t, e, "wasmgate_tcp_received_bytes_total"); n < 2*size {
		t.Errorf("bytes counted: %v, want at least %d", n, 2*size)
	}

	open, or, _ := greet(t, e)
	v["cluster"] = "other"
	if err := e.srv.Apply(context.Background(), parse(t, tcpProxyConfig, v), ""); err != nil {
		t.Fatal(err)
	}
	if _, _, name := greet(t, e); name != "other" {
		t.Errorf("after the reload, a new connection reached %q", name)
	}
	io.WriteString(open, "still here\n")
	if line, err := or.ReadString('\n'); err != nil || line != "still here\n" {
		t.Errorf("the connection opened before the reload: %q, %v", line, err)
	}

	// No endpoint can be reached: the client's connection closes.
	v["cluster"] = "nowhere"
	if err := e.srv.Apply(context.Background(), parse(t, tcpProxyConfig, v), ""); err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", e.srv.Addr("tcp").String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(nc); err != nil || len(b) > 0 {
		t.Errorf("with no endpoint: %q, %v; want the connection closed", b, err)
	}

	// Each connection has its access log line: the 8 MiB echo's, and the
	// one that found no endpoint, with its reason.
	var lines []map[string]any
	var big, failed bool
	for deadline := time.Now().Add(10 * time.Second); !(big && failed) && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		lines = lines[:0]
		b, _ := os.ReadFile(logFile)
		for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			var m map[string]any
			if json.Unmarshal(l, &m) == nil {
				lines = append(lines, m)
			}
		}
		for _, m := range lines {
			big = big || m["bytes_received"] == float64(size) && m["bytes_sent"] == float64(size+len("echo\n")) && m["upstream_cluster"] == "echo"
			failed = failed || m["details"] == "upstream_connect_failure" && m["upstream_cluster"] == "nowhere" && m["response_flags"] == "UF"
		}
	}
	for _, m := range lines {
		if m["protocol"] != "TCP" || m["listener"] != "tcp" {
			t.Errorf("access log line %v", m)
		}
	}
	if !big || !failed {
		t.Errorf("access log lacks the 8 MiB echo (%v) or the failed connect (%v):\n%v", big, failed, lines)
	}
}

// TestTCPProxyTLS: a TCP listener with tls terminates it, verified by the
// client against the CA, and carries the plaintext bytes to the cluster.
func TestTCPProxyTLS(t *testing.T) {
	ca := testpki.NewCA(t, "tcp test CA")
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, testpki.Leaf{CommonName: "db.example.com", DNS: []string{"db.example.com"}}).Write(t, dir, "db")
	e := newEnv(t, `
listeners:
- name: tcp
  address: 127.0.0.1:0
  tls: {certificates: [{cert_file: "{{cert}}", key_file: "{{key}}"}]}
  tcp_proxy: {cluster: echo}
clusters:
- name: echo
  endpoints: [{address: "{{echo}}"}]
`, vars{"cert": certFile, "key": keyFile, "echo": tcpEcho(t, "echo")})
	c, err := tls.Dial("tcp", e.srv.Addr("tcp").String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "db.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	io.WriteString(c, "over tls\n")
	for _, want := range []string{"echo\n", "over tls\n"} {
		if line, err := r.ReadString('\n'); err != nil || line != want {
			t.Fatalf("read %q, %v; want %q", line, err, want)
		}
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "" {
		t.Errorf("ALPN %q: a TCP listener offers none", p)
	}
}

// BenchmarkTCPProxy is 64 KiB echoed through a TCP listener, one round
// trip at a time on one connection, with the echo on loopback: the
// proxy's cost per byte and per chunk. none has no filter; wasm has the
// host's tcpfilter test module (built with the proxy-wasm Go SDK), which
// reads every chunk both ways, holds the client's until a line ends and
// upper-cases the upstream's: a filter that touches every byte.
func BenchmarkTCPProxy(b *testing.B) {
	for _, set := range []struct{ name, filters string }{
		{"none", ""},
		{"wasm", "\n    filters: [{plugin: tcpfilter}]"},
	} {
		b.Run(set.name, func(b *testing.B) {
			roundTrip := tcpEchoThrough(b, set.filters)
			b.SetBytes(64 << 10)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				roundTrip()
			}
		})
	}
}

// tcpEchoThrough starts an echo server and a proxy whose TCP listener
// carries to it, with filters (YAML under tcp_proxy) the tcpfilter test
// module may be in, and returns a round trip of 64 KiB through the proxy
// on one connection. Everything stops with tb.
func tcpEchoThrough(tb testing.TB, filters string) func() {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	wasmFile, _ := filepath.Abs("wasm/testdata/tcpfilter.wasm")
	cfg := `
listeners:
- name: tcp
  address: 127.0.0.1:0
  tcp_proxy:
    cluster: echo` + filters + `
clusters:
- name: echo
  endpoints: [{address: "` + ln.Addr().String() + `"}]
plugins:
- {name: tcpfilter, file: "` + wasmFile + `"}
`
	parsed, err := config.Parse([]byte(cfg), "bench.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	host, err := wasm.NewHost(wasm.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { host.Close() })
	srv := proxy.NewServer(proxy.Options{Plugins: host})
	if err := srv.Apply(context.Background(), parsed, ""); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Shutdown(context.Background()) })
	c, err := net.Dial("tcp", srv.Addr("tcp").String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	msg := bytes.Repeat([]byte("A"), 64<<10)
	msg[len(msg)-1] = '\n'
	back := make([]byte, len(msg))
	return func() {
		if _, err := c.Write(msg); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(c, back); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestListenerTurnsTCP: a reload that makes an HTTP listener a TCP one at
// the same address, and back, serves the new kind on new connections;
// a keep-alive HTTP connection of the old kind gets 503 and is closed, as
// for a removed listener, and never reaches the TCP path.
func TestListenerTurnsTCP(t *testing.T) {
	addr := freeAddr(t)
	httpCfg := `
listeners:
- name: edge
  address: "{{addr}}"
clusters:
- name: echo
  endpoints: [{address: "{{echo}}"}]
virtual_hosts:
- name: any
  domains: ["*"]
  routes:
  - name: static
    match: {prefix: /}
    direct_response: {status: 200, body: "http\n"}
`
	tcpCfg := `
listeners:
- name: edge
  address: "{{addr}}"
  tcp_proxy: {cluster: echo}
clusters:
- name: echo
  endpoints: [{address: "{{echo}}"}]
`
	v := vars{"addr": addr, "echo": tcpEcho(t, "echo")}
	e := newEnv(t, httpCfg, v)
	old := dialRaw(t, addr)
	if resp, body := old.roundTrip(t, "GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || string(body) != "http\n" {
		t.Fatalf("before: %d %q", resp.StatusCode, body)
	}
	if err := e.srv.Apply(context.Background(), parse(t, tcpCfg, v), ""); err != nil {
		t.Fatal(err)
	}
	if _, _, name := greetAt(t, addr); name != "echo" {
		t.Errorf("a new connection after the switch reached %q", name)
	}
	if resp, _ := old.roundTrip(t, "GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 503 || !resp.Close {
		t.Errorf("the old keep-alive connection: %d (close %v), want 503 and close", resp.StatusCode, resp.Close)
	}
	if err := e.srv.Apply(context.Background(), parse(t, httpCfg, v), ""); err != nil {
		t.Fatal(err)
	}
	fresh := dialRaw(t, addr)
	if resp, body := fresh.roundTrip(t, "GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || string(body) != "http\n" {
		t.Errorf("after switching back: %d %q", resp.StatusCode, body)
	}
}

// freeAddr is a loopback address free at the time of the call.
func freeAddr(t *testing.T) string { return deadAddr(t) }
