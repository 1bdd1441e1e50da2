package proxy_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestClientErrorsDoNotEject: requests whose bodies the client breaks
// (a malformed chunk, a body cut short) are answered 400 and closed; they
// are not the endpoint's failures, so outlier detection, which ejects an
// endpoint after two consecutive ones, leaves it in. An upstream failure
// still counts.
func TestClientErrorsDoNotEject(t *testing.T) {
	_, v := startEchoes(t, "a")
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters:
  - name: a
    endpoints: [{address: "{{a}}"}]
    outlier_detection: {consecutive_5xx: 2, consecutive_gateway_failure: 2, max_ejection_percent: 100, base_ejection_time: 1m}
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: a}]
`, v)
	big := strings.Repeat("x", 256<<10) // streams: larger than the read buffer
	bad := []string{
		// A chunk whose size is not hex.
		"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\nzz\r\n",
		// A declared length the client never sends.
		"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + big,
	}
	for round := 0; round < 3; round++ {
		for i, raw := range bad {
			c := dialRaw(t, e.addr(t, "main"))
			if _, err := c.c.Write([]byte(raw)); err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				_ = c.c.(interface{ CloseWrite() error }).CloseWrite()
			}
			resp, err := http.ReadResponse(c.br, &http.Request{Method: "POST"})
			if err != nil {
				t.Fatalf("round %d, bad body %d: %v", round, i, err)
			}
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("round %d, bad body %d: status %d, want 400", round, i, resp.StatusCode)
			}
			c.c.Close()
		}
	}
	for _, ep := range e.clusters(t)["a"].Endpoints {
		if ep.Ejected || ep.TimesEjected > 0 {
			t.Fatalf("endpoint %s ejected for the clients' errors", ep.Address)
		}
	}
	if got := e.get(t, "", "/").echo(t).Instance; got != "a" {
		t.Fatalf("answered by %q", got)
	}
}
