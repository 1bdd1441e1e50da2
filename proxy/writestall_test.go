package proxy_test

import (
	"bytes"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
)

// TestClientThatNeverReads: a client that asks for a large response and
// never reads it is cut off after the listener's write timeout, which
// releases its upstream connection and its circuit breaker slot (the
// cluster allows one request at a time: the next request gets through)
// and counts in wasmgate_downstream_write_timeouts_total.
func TestClientThatNeverReads(t *testing.T) {
	upstreamDone := make(chan error, 4)
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	up := testupstream.Start(t, "big", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/endless" {
			_, _ = w.Write([]byte("small"))
			return
		}
		// Far more than the socket buffers between here and the client
		// hold, bounded so that the test ends whatever happens.
		for i := 0; i < 16<<10; i++ {
			if _, err := w.Write(chunk); err != nil {
				upstreamDone <- err
				return
			}
		}
		upstreamDone <- nil
	}))
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0", write_timeout: 300ms}]
clusters: [{name: big, endpoints: [{address: "{{up}}"}], circuit_breakers: {max_requests: 1}}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: big, timeout: 60s}]
`, vars{"up": up.Addr()})
	c, err := net.Dial("tcp", e.addr(t, "main"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10)
	}
	if _, err := c.Write([]byte("GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// Never read. The upstream's write fails once the proxy has
	// given its connection up.
	select {
	case err := <-upstreamDone:
		if err == nil {
			t.Fatal("the upstream wrote its whole endless body: the proxy never stopped reading it")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream connection is still held 20s after the client stopped reading")
	}
	// The slot is released just after the upstream connection closes.
	eventually(t, 5*time.Second, "the breaker slot released for the next request", func() bool {
		return e.get(t, "", "/small").status == http.StatusOK
	})
	if n := gatheredSum(t, e, "wasmgate_downstream_write_timeouts_total"); n != 1 {
		t.Errorf("write timeouts counted: %v, want 1", n)
	}
}

// gatheredSum sums a counter's series.
func gatheredSum(t *testing.T, e *env, name string) float64 {
	t.Helper()
	mfs, err := e.srv.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
