package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
)

func TestBadInput(t *testing.T) {
	echo := testupstream.Start(t, "a", nil)
	e := newEnv(t, `
admin: {address: "off"}
listeners:
  - {name: main, address: "127.0.0.1:0", max_request_header_bytes: 4096, max_request_body_bytes: 1024}
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: a}]
`, vars{"a": echo.Addr()})

	big := strings.Repeat("b", 8<<10)
	cases := []struct {
		name   string
		raw    string
		status int
		body   string
	}{
		{"garbage", "GARBAGE\r\n\r\n", 400, "malformed request\n"},
		{"no protocol", "GET /\r\n\r\n", 400, ""},
		{"header without a colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", 400, ""},
		{"bad content length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, ""},
		{"negative content length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, ""},
		{"space in the header name", "GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", 400, ""},
		{"a later HTTP version", "GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505, "unsupported_protocol\n"},
		{"HTTP/2.0 in a request line", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, ""},
		{"not HTTP", "GET / FTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"a malformed version", "GET / HTTP/1.x\r\nHost: x\r\n\r\n", 400, ""},
		{"no host in HTTP/1.1", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, ""},
		{"oversized header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n", 431, "request header too large\n"},
		{"oversized request line", "GET /" + big + " HTTP/1.1\r\nHost: x\r\n\r\n", 431, ""},
		{"body over the limit", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n" + strings.Repeat("x", 2048), 413, "request_body_too_large\n"},
		{"large body over the limit", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" + strings.Repeat("x", 4096), 413, ""},
		// A chunked body has no length to check up front: it is counted.
		{"chunked body over the limit", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + strings.Repeat("x", 2048) + "\r\n0\r\n\r\n", 413, "request_body_too_large\n"},
		{"chunked body under the limit", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n" + strings.Repeat("x", 512) + "\r\n0\r\n\r\n", 200, ""},
		{"body at the limit", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024), 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.rawExchange(t, "main", tc.raw)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %.200q", resp.StatusCode, tc.status, body)
			}
			if tc.body != "" && string(body) != tc.body {
				t.Errorf("body %q, want %q", body, tc.body)
			}
		})
	}
	if got := echo.Requests(); got != 2 {
		t.Errorf("the upstream got %d requests, want only the two within limits", got)
	}

	// The proxy still serves after all that.
	e.get(t, "", "/fine").echo(t)

	t.Run("body over the limit from a client", func(t *testing.T) {
		r := e.do(t, request{method: "POST", path: "/", body: strings.NewReader(strings.Repeat("y", 4096))})
		if r.status != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413", r.status)
		}
	})
}
