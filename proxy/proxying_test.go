package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
)

func TestKeepAlive(t *testing.T) {
	ups, v := startEchoes(t, "a")
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: a}]
`, v)
	const n = 200
	for i := 0; i < n; i++ {
		e.get(t, "", fmt.Sprintf("/%d", i)).echo(t)
	}
	if d := e.dials.Load(); d != 1 {
		t.Errorf("the client dialed %d connections for %d sequential requests, want 1", d, n)
	}
	if a := ups["a"].Accepted(); a != 1 {
		t.Errorf("the upstream accepted %d connections for %d sequential requests, want 1", a, n)
	}
	ep := e.clusters(t)["a"].Endpoints[0]
	if ep.Connections < 1 || ep.Connections > 1 {
		t.Errorf("/clusters shows %d connections to %s, want 1", ep.Connections, ep.Address)
	}
	if ep.Requests != n {
		t.Errorf("/clusters shows %d requests to %s, want %d", ep.Requests, ep.Address, n)
	}

	// Concurrent clients share a small pool: no more upstream connections
	// than requests in flight at once.
	const workers, each = 8, 50
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				resp, err := e.client.Get("http://" + e.addr(t, "main") + "/c")
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if a := ups["a"].Accepted(); a > 1+workers {
		t.Errorf("the upstream accepted %d connections for %d requests from %d clients", a, workers*each, workers)
	}
}

func TestHopByHopHeaders(t *testing.T) {
	_, v := startEchoes(t, "a")
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: a}]
`, v)
	cases := []struct {
		name string
		head string
		gone []string
		kept []string
	}{
		{
			name: "connection tokens and the standard hop-by-hop headers",
			head: "Connection: keep-alive, X-Hop, x-other-hop\r\nX-Hop: 1\r\nX-Other-Hop: 2\r\nKeep-Alive: timeout=5\r\n" +
				"TE: trailers\r\nProxy-Connection: keep-alive\r\nX-End-To-End: 1\r\n",
			gone: []string{"X-Hop", "X-Other-Hop", "Keep-Alive", "Te", "Proxy-Connection"},
			kept: []string{"X-End-To-End"},
		},
		{
			name: "upgrade to a protocol the proxy does not relay",
			head: "Connection: Upgrade\r\nUpgrade: foo/2\r\nX-End-To-End: 1\r\n",
			gone: []string{"Upgrade"},
			kept: []string{"X-End-To-End"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.rawExchange(t, "main", "GET /hop HTTP/1.1\r\nHost: hop.test\r\n"+tc.head+"\r\n")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := testupstream.Decode(t, body)
			for _, h := range tc.gone {
				if vals, ok := got.Header[h]; ok {
					t.Errorf("the upstream got hop-by-hop header %s: %q", h, vals)
				}
			}
			for _, tok := range strings.Split(got.Header.Get("Connection"), ",") {
				if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "close") && !strings.EqualFold(tok, "keep-alive") {
					t.Errorf("the upstream got the client's Connection token %q", tok)
				}
			}
			for _, h := range tc.kept {
				if got.Header.Get(h) == "" {
					t.Errorf("the upstream did not get end-to-end header %s", h)
				}
			}
		})
	}
	// The upstream's own hop-by-hop headers stop at the proxy too.
	t.Run("response", func(t *testing.T) {
		resp, body := e.rawExchange(t, "main", "GET /hop?header=Keep-Alive:timeout%3D5&header=Proxy-Connection:keep-alive&header=X-End-To-End:1 HTTP/1.1\r\nHost: hop.test\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		for _, h := range []string{"Keep-Alive", "Proxy-Connection"} {
			if vals, ok := resp.Header[h]; ok {
				t.Errorf("the client got the upstream's hop-by-hop header %s: %q", h, vals)
			}
		}
		if resp.Header.Get("X-End-To-End") != "1" {
			t.Errorf("the client did not get end-to-end header X-End-To-End: %v", resp.Header)
		}
	})
}

func TestForwardedHeaders(t *testing.T) {
	_, v := startEchoes(t, "a")
	e := newEnv(t, `
admin: {address: "off"}
listeners:
  - {name: main, address: "127.0.0.1:0"}
  - {name: trusting, address: "127.0.0.1:0", trusted_proxies: [127.0.0.1/32]}
  - {name: elsewhere, address: "127.0.0.1:0", trusted_proxies: [10.0.0.0/8]}
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: a}]
`, v)
	spoof := []string{"X-Forwarded-For", "203.0.113.9", "X-Forwarded-Proto", "https", "X-Forwarded-Host", "spoofed.test", "Forwarded", "for=203.0.113.9"}
	cases := []struct {
		name     string
		listener string
		header   []string
		want     map[string]string
	}{
		{"set when absent", "main", nil,
			map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "site.test:8080"}},
		{"dropped from an untrusted peer", "main", spoof,
			map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "site.test:8080", "Forwarded": ""}},
		{"every one dropped from an untrusted peer", "main", []string{"X-Forwarded-For", "203.0.113.9", "X-Forwarded-For", "198.51.100.7"},
			map[string]string{"X-Forwarded-For": "127.0.0.1"}},
		{"dropped when the peer is not in trusted_proxies", "elsewhere", spoof,
			map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "site.test:8080"}},
		{"kept and extended from a trusted peer", "trusting", spoof,
			map[string]string{"X-Forwarded-For": "203.0.113.9, 127.0.0.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "spoofed.test"}},
		{"set by a trusted peer that sent none", "trusting", nil,
			map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "site.test:8080"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := e.do(t, request{listener: tc.listener, host: "site.test:8080", path: "/", header: tc.header}).echo(t)
			for k, want := range tc.want {
				if g := strings.Join(got.Header.Values(k), ", "); g != want {
					t.Errorf("%s: %q, want %q", k, g, want)
				}
			}
		})
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestRequestID(t *testing.T) {
	_, v := startEchoes(t, "a")
	e := newEnv(t, `
admin: {address: "off"}
listeners:
  - {name: main, address: "127.0.0.1:0"}
  - {name: custom, address: "127.0.0.1:0", request_id_header: X-Trace}
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: a}]
`, v)
	t.Run("generated when absent", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 50; i++ {
			id := e.get(t, "", "/").echo(t).Header.Get("X-Request-Id")
			if !uuidV4.MatchString(id) {
				t.Fatalf("request id %q is not a UUID v4", id)
			}
			if seen[id] {
				t.Fatalf("request id %q repeated", id)
			}
			seen[id] = true
		}
	})
	t.Run("kept when present", func(t *testing.T) {
		got := e.get(t, "", "/", "X-Request-Id", "client-chosen-1").echo(t)
		if ids := got.Header.Values("X-Request-Id"); len(ids) != 1 || ids[0] != "client-chosen-1" {
			t.Errorf("request id %q, want the client's", ids)
		}
	})
	t.Run("configured header", func(t *testing.T) {
		got := e.do(t, request{listener: "custom", path: "/"}).echo(t)
		if id := got.Header.Get("X-Trace"); !uuidV4.MatchString(id) {
			t.Errorf("X-Trace %q is not a UUID v4", id)
		}
		got = e.do(t, request{listener: "custom", path: "/", header: []string{"x-trace", "mine"}}).echo(t)
		if id := got.Header.Get("X-Trace"); id != "mine" {
			t.Errorf("X-Trace %q, want mine", id)
		}
	})
}

func TestUpstreamFailures(t *testing.T) {
	echo := testupstream.Start(t, "a", nil)
	hang := testupstream.Start(t, "hang", testupstream.Hang())
	reset := testupstream.StartRaw(t, "reset", testupstream.ResetAfterHead)
	logPath := filepath.Join(t.TempDir(), "access.log")
	e := newEnv(t, `
admin: {address: "off"}
access_log:
  path: {{log}}
  fields: [path, status, response_flags, upstream_cluster, upstream_host, details]
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters:
  - {name: a, endpoints: [{address: "{{a}}"}]}
  - {name: closed, connect_timeout: 1s, endpoints: [{address: "{{closed}}"}]}
  - {name: hang, endpoints: [{address: "{{hang}}"}]}
  - {name: reset, endpoints: [{address: "{{reset}}"}]}
  - {name: empty, discovery: registry, endpoints: []}
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {match: {prefix: /connect}, cluster: closed}
      - {match: {prefix: /timeout}, cluster: hang, timeout: 200ms}
      - {match: {prefix: /reset}, cluster: reset}
      - {match: {prefix: /empty}, cluster: empty}
      - {match: {prefix: /}, cluster: a}
`, vars{"a": echo.Addr(), "closed": testupstream.ClosedAddr(t), "hang": hang.Addr(), "reset": reset.Addr(), "log": logPath})

	cases := []struct {
		path    string
		status  int
		body    string
		flags   string
		cluster string
		within  time.Duration
	}{
		{"/connect", 502, "upstream_connect_failure\n", "UF", "closed", 2 * time.Second},
		{"/timeout", 504, "upstream_timeout\n", "UT", "hang", 2 * time.Second},
		{"/reset", 502, "upstream_reset\n", "UC", "reset", 2 * time.Second},
		{"/empty", 503, "no_healthy_upstream\n", "UH", "empty", 2 * time.Second},
		{"/ok", 200, "", "-", "a", 2 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			start := time.Now()
			r := e.get(t, "", tc.path)
			took := time.Since(start)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %q", r.status, tc.status, r.body)
			}
			if tc.body != "" && string(r.body) != tc.body {
				t.Errorf("body %q, want %q", r.body, tc.body)
			}
			if took > tc.within {
				t.Errorf("took %v, want under %v", took, tc.within)
			}
			if tc.path == "/timeout" && took < 200*time.Millisecond {
				t.Errorf("timed out after %v, before the route's 200ms", took)
			}
		})
	}
	lines := readLogLines(t, logPath, len(cases))
	byPath := map[string]map[string]any{}
	for _, l := range lines {
		byPath[l["path"].(string)] = l
	}
	for _, tc := range cases {
		l := byPath[tc.path]
		if l == nil {
			t.Errorf("no access log line for %s", tc.path)
			continue
		}
		if l["status"] != float64(tc.status) || l["response_flags"] != tc.flags || l["upstream_cluster"] != tc.cluster {
			t.Errorf("%s: access log %v, want status %d flags %s cluster %s", tc.path, l, tc.status, tc.flags, tc.cluster)
		}
	}
	// The hanging upstream saw the request that timed out; the proxy gave up
	// on it rather than waiting.
	if hang.Requests() != 1 {
		t.Errorf("the hanging upstream got %d requests, want 1", hang.Requests())
	}
}

// rawConn is a client connection for several requests in sequence.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{c: c, br: bufio.NewReader(c)}
}

// roundTrip writes raw and reads one response, for a request of method.
func (rc *rawConn) roundTrip(t testing.TB, method, raw string) (*http.Response, []byte) {
	t.Helper()
	if _, err := io.WriteString(rc.c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response to %.60q: %v", raw, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body of the response to %.60q: %v", raw, err)
	}
	return resp, body
}

// TestStaleUpstreamConnection sends requests over pooled connections that
// the upstream has closed. A request whose body was streamed cannot be sent
// again: it must fail rather than reach the upstream without its body.
func TestStaleUpstreamConnection(t *testing.T) {
	up := testupstream.StartRaw(t, "oneshot", testupstream.OneShot)
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: a}]
`, vars{"a": up.Addr()})
	for i := 0; i < 20; i++ {
		// A bodiless request is retried on a fresh connection.
		if r := e.get(t, "", "/"); r.status != 200 || string(r.body) != "0" {
			t.Fatalf("GET %d: %d %q", i, r.status, r.body)
		}
		// A streamed body is not: the request fails, with 502 or, as the
		// proxy closes the connection on the rest of the body, a reset.
		const n = 200 << 10
		resp, err := e.client.Do(e.newRequest(t, request{method: "POST", path: "/", body: io.MultiReader(&pattern{n: n})}))
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == 200 && string(body) != strconv.Itoa(n):
			t.Fatalf("POST %d: the upstream got %s body bytes of %d", i, body, n)
		case resp.StatusCode != 200 && resp.StatusCode != 502:
			t.Fatalf("POST %d: status %d %q", i, resp.StatusCode, body)
		}
	}
}
