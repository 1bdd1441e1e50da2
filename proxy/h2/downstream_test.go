package h2_test

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/wasmgate/wasmgate/proxy/internal/prototest"
)

// TestClusterOfDownstreamProtocol sends HTTP/1.1 and HTTP/2 requests
// through a cluster whose protocol is downstream, to an upstream that
// speaks both (net/http, h2c by prior knowledge): each arrives in the
// protocol it came in on, as with Envoy's use_downstream_protocol_config.
func TestClusterOfDownstreamProtocol(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	up := &http.Server{Protocols: &protocols, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	})}
	go up.Serve(ln)
	t.Cleanup(func() { up.Close() })

	srv := prototest.Start(t, `
admin: {address: "off"}
listeners:
- name: plain
  address: "127.0.0.1:0"
  http2: {h2c: true}
clusters:
- name: up
  protocol: downstream
  endpoints: [{address: "{{up}}"}]
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - cluster: up
`, map[string]string{"up": ln.Addr().String()}, nil)
	url := "http://" + srv.Addr("plain").String() + "/"

	h1 := &http.Client{Transport: &http.Transport{}}
	var prior http.Protocols
	prior.SetUnencryptedHTTP2(true) // h2c by prior knowledge
	h2c := &http.Client{Transport: &http.Transport{Protocols: &prior}}
	for _, tc := range []struct {
		name   string
		client *http.Client
		want   string
	}{{"HTTP/1.1", h1, "HTTP/1.1"}, {"HTTP/2", h2c, "HTTP/2.0"}, {"HTTP/1.1 again", h1, "HTTP/1.1"}} {
		resp, err := tc.client.Get(url)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != tc.want {
			t.Errorf("%s: %d %q upstream, want %q", tc.name, resp.StatusCode, body, tc.want)
		}
	}
}
