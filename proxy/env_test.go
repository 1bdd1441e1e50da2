package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
)

// env is a proxy serving a configuration on real loopback sockets, its
// admin endpoints, and an HTTP/1.1 client that counts the connections it
// dials.
type env struct {
	srv      *proxy.Server
	admin    *proxy.Admin
	adminURL string
	client   *http.Client
	dials    atomic.Int64
}

// vars fills {{name}} placeholders of a configuration.
type vars map[string]string

func render(yaml string, v vars) string {
	pairs := make([]string, 0, 2*len(v))
	for k, val := range v {
		pairs = append(pairs, "{{"+k+"}}", val)
	}
	return strings.NewReplacer(pairs...).Replace(yaml)
}

// parse renders and parses a configuration, failing the test if it is
// invalid.
func parse(t testing.TB, yaml string, v vars) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(render(yaml, v)), t.Name()+".yaml")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// newEnv starts a proxy on yaml. Every listener should bind 127.0.0.1:0.
func newEnv(t *testing.T, yaml string, v vars) *env {
	t.Helper()
	e := &env{srv: proxy.NewServer(proxy.Options{})}
	e.admin = proxy.NewAdmin(e.srv)
	adm := httptest.NewServer(e.admin.Handler())
	e.adminURL = adm.URL
	t.Cleanup(adm.Close)
	if err := e.srv.Apply(context.Background(), parse(t, yaml, v), ""); err != nil {
		t.Fatalf("apply: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.srv.Shutdown(ctx)
	})
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			e.dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 64,
		DisableCompression:  true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	e.client = &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return e
}

// apply makes yaml the live configuration.
func (e *env) apply(t testing.TB, yaml string, v vars) {
	t.Helper()
	if err := e.srv.Apply(context.Background(), parse(t, yaml, v), ""); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// addr is the bound address of a listener.
func (e *env) addr(t testing.TB, listener string) string {
	t.Helper()
	a := e.srv.Addr(listener)
	if a == nil {
		t.Fatalf("no listener %q", listener)
	}
	return a.String()
}

// request is one request to a listener.
type request struct {
	listener string // empty means "main"
	method   string // empty means GET
	host     string // empty means the listener's address
	path     string
	header   []string // name, value, name, value...
	body     io.Reader
}

// response is a response read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) echo(t testing.TB) testupstream.Echoed {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200 from an upstream: %.300q", r.status, r.body)
	}
	return testupstream.Decode(t, r.body)
}

func (e *env) newRequest(t testing.TB, r request) *http.Request {
	t.Helper()
	if r.listener == "" {
		r.listener = "main"
	}
	if r.method == "" {
		r.method = http.MethodGet
	}
	req, err := http.NewRequest(r.method, "http://"+e.addr(t, r.listener)+r.path, r.body)
	if err != nil {
		t.Fatal(err)
	}
	if r.host != "" {
		req.Host = r.host
	}
	for i := 0; i+1 < len(r.header); i += 2 {
		req.Header.Add(r.header[i], r.header[i+1])
	}
	return req
}

// do sends a request and reads the whole response.
func (e *env) do(t testing.TB, r request) response {
	t.Helper()
	resp, err := e.client.Do(e.newRequest(t, r))
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", r.method, r.path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// get is do for a GET to the main listener.
func (e *env) get(t testing.TB, host, path string, header ...string) response {
	t.Helper()
	return e.do(t, request{host: host, path: path, header: header})
}

// adminGet reads an admin endpoint.
func (e *env) adminGet(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(e.adminURL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// clusters reads /clusters.
func (e *env) clusters(t testing.TB) map[string]proxy.ClusterStatus {
	t.Helper()
	status, body := e.adminGet(t, "/clusters")
	if status != http.StatusOK {
		t.Fatalf("/clusters: %d %s", status, body)
	}
	var doc struct {
		Clusters []proxy.ClusterStatus `json:"clusters"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("/clusters: %v: %s", err, body)
	}
	out := map[string]proxy.ClusterStatus{}
	for _, c := range doc.Clusters {
		out[c.Name] = c
	}
	return out
}

// rawExchange writes raw bytes to a listener and reads one response.
func (e *env) rawExchange(t testing.TB, listener, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.addr(t, listener), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response to %.80q: %v", raw, err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, body
}

// eventually polls cond every few milliseconds until it holds or the
// deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readLogLines waits for at least n lines in an access log file and
// parses each as a JSON object.
func readLogLines(t testing.TB, path string, n int) []map[string]any {
	t.Helper()
	var data []byte
	eventually(t, 5*time.Second, fmt.Sprintf("%d access log lines in %s", n, path), func() bool {
		data, _ = os.ReadFile(path)
		return bytes.Count(data, []byte("\n")) >= n
	})
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("access log line is not JSON (%v): %s", err, line)
		}
		out = append(out, m)
	}
	return out
}
