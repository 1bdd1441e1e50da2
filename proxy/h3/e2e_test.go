package h3_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/internal/prototest"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

const h3Config = `
admin: {address: "off"}
listeners:
- name: edge
  address: "127.0.0.1:0"
  tls:
    certificates: [{cert_file: "{{cert}}", key_file: "{{key}}"}]
    client_ca_file: "{{clientca}}"
    client_auth: optional
    forward_client_cert: sanitize_set
  http3: {enabled: true, alt_svc_max_age: 1h}
clusters:
- name: web
  endpoints: [{address: "{{web}}"}]
plugins:
- name: identity
  file: identity.wasm
virtual_hosts:
- name: all
  domains: ["*"]
  filters: [{plugin: identity}]
  routes:
  - cluster: web
`

func TestHTTP3(t *testing.T) {
	p := prototest.NewPKI(t)
	plugins := &prototest.IdentityPlugins{}
	srv := prototest.Start(t, h3Config, map[string]string{
		"cert": p.CertFile, "key": p.KeyFile, "clientca": p.ClientCAFile, "web": prototest.Echo(t),
	}, plugins)
	addr := srv.Addr("edge").String()
	port := addr[strings.LastIndexByte(addr, ':')+1:]

	// The TCP side advertises HTTP/3, over HTTP/1.1 and HTTP/2 alike.
	for _, rt := range []http.RoundTripper{
		&http.Transport{TLSClientConfig: p.ClientTLS("http/1.1")},
		prototest.H2Transport(p.ClientTLS("h2")),
	} {
		resp, err := (&http.Client{Transport: rt}).Get("https://" + addr + "/tcp")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got, want := resp.Header.Get("Alt-Svc"), `h3=":`+port+`"; ma=3600`; got != want {
			t.Errorf("%s: Alt-Svc %q, want %q", resp.Proto, got, want)
		}
	}

	tr := &http3.Transport{TLSClientConfig: p.ClientTLS()}
	defer tr.Close()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range 3 {
		body := strings.Repeat("h3", 50000*i)
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/h3?i=1", strings.NewReader(body))
		req.Header.Set("X-Forwarded-Client-Cert", "By=evil")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 3 || resp.StatusCode != 200 {
			t.Fatalf("proto %s status %d", resp.Proto, resp.StatusCode)
		}
		if got["path"] != "/h3?i=1" || got["body"] != body || got["xfp"] != "https" {
			t.Errorf("upstream saw path %q, %d body bytes (want %d), X-Forwarded-Proto %q", got["path"], len(got["body"]), len(body), got["xfp"])
		}
		if !strings.Contains(got["xfcc"], "URI=spiffe://td/ns/x/sa/y") || strings.Contains(got["xfcc"], "evil") {
			t.Errorf("X-Forwarded-Client-Cert %q", got["xfcc"])
		}
	}
	all := plugins.All()
	last := all[len(all)-3:]

	// How a body is framed upstream follows what the client sent: none for
	// a stream that ended with its headers, chunked for a body of a length
	// the client did not send, whether it ended in its first read or is
	// still coming.
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("first,"))
		time.Sleep(50 * time.Millisecond)
		pw.Write([]byte(strings.Repeat("later", 2000)))
		pw.Close()
	}()
	for _, tt := range []struct {
		name   string
		method string
		body   io.Reader
		want   string
		te, cl string
	}{
		{"GET", http.MethodGet, nil, "", "", "0"},
		{"DELETE", http.MethodDelete, nil, "", "", "0"},
		{"POST of unknown length, whole at once", http.MethodPost, struct{ io.Reader }{strings.NewReader("short")}, "short", "chunked", "-1"},
		{"POST streamed", http.MethodPost, pr, "first," + strings.Repeat("later", 2000), "chunked", "-1"},
	} {
		req, _ := http.NewRequest(tt.method, "https://"+addr+"/framing", tt.body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var got map[string]string
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got["body"] != tt.want || got["te"] != tt.te || got["cl"] != tt.cl {
			t.Errorf("%s: upstream saw %d body bytes (want %d), Transfer-Encoding %q (want %q), Content-Length %s (want %s)",
				tt.name, len(got["body"]), len(tt.want), got["te"], tt.te, got["cl"], tt.cl)
		}
	}
	for _, s := range last {
		if s.Protocol != "HTTP/3" || s.TLS == nil || s.TLS.ALPN != "h3" || s.TLS.Version != "TLSv1.3" ||
			len(s.TLS.PeerURISANs) != 1 || s.TLS.PeerURISANs[0] != "spiffe://td/ns/x/sa/y" {
			t.Fatalf("filter saw %+v %+v", s, s.TLS)
		}
		if s.TLS != last[0].TLS {
			t.Error("the identity was computed again for a request on the same QUIC connection")
		}
	}

	// Shutting down ends the QUIC side too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// Filters see the Content-Length an HTTP/3 client sent, and none when it
// sent none. (Go's clients send "content-length: 0" for a POST, PUT or
// PATCH without a body, and none for a GET or DELETE.)
func TestFiltersSeeTheClientsLength(t *testing.T) {
	p := prototest.NewPKI(t)
	plugins := &prototest.IdentityPlugins{}
	srv := prototest.Start(t, h3Config, map[string]string{
		"cert": p.CertFile, "key": p.KeyFile, "clientca": p.ClientCAFile, "web": prototest.Echo(t),
	}, plugins)
	tr := &http3.Transport{TLSClientConfig: p.ClientTLS()}
	defer tr.Close()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, tt := range []struct {
		name, method string
		body         io.Reader
		want         string // the Content-Length the filter sees; "" for none
	}{
		{"GET", http.MethodGet, nil, ""},
		{"DELETE", http.MethodDelete, nil, ""},
		{"POST with no body", http.MethodPost, nil, "0"},
		{"POST of unknown length, whole at once", http.MethodPost, struct{ io.Reader }{strings.NewReader("short")}, ""},
		{"POST with a length", http.MethodPost, strings.NewReader("hello"), "5"},
	} {
		req, _ := http.NewRequest(tt.method, "https://"+srv.Addr("edge").String()+"/length", tt.body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		s := plugins.Last(t)
		if got := s.Headers["content-length"]; resp.ProtoMajor != 3 || got != tt.want {
			t.Errorf("%s over %s: the filter saw Content-Length %q, want %q (headers %v)", tt.name, resp.Proto, got, tt.want, s.Headers)
		}
	}
}

// TestHTTP3FlowRecord: an HTTP/3 connection makes one flow record when it
// closes, as a TCP connection does: the listener, both addresses, the
// QUIC bytes each way, TLS 1.3 with its cipher, the client's verified
// SPIFFE ID, and that the client closed it.
func TestHTTP3FlowRecord(t *testing.T) {
	p := prototest.NewPKI(t)
	records := filepath.Join(t.TempDir(), "records.log")
	yaml := strings.NewReplacer("{{cert}}", p.CertFile, "{{key}}", p.KeyFile, "{{clientca}}", p.ClientCAFile,
		"{{web}}", prototest.Echo(t)).Replace(h3Config)
	yaml = strings.Replace(yaml, "plugins:\n- name: identity\n  file: identity.wasm\n", "", 1)
	yaml = strings.Replace(yaml, "  filters: [{plugin: identity}]\n", "", 1)
	yaml += "telemetry:\n  sinks: [{name: file, type: file, file: {path: " + records + "}}]\n  flow: [file]\n"
	cfg, err := config.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := telemetry.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.Shutdown(context.Background())
	srv := proxy.NewServer(proxy.Options{Telemetry: pipe})
	if err := srv.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	addr := srv.Addr("edge").String()

	tr := &http3.Transport{TLSClientConfig: p.ClientTLS()}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for range 2 {
		resp, err := c.Get("https://" + addr + "/flow")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 3 || resp.StatusCode != 200 {
			t.Fatalf("proto %s status %d", resp.Proto, resp.StatusCode)
		}
	}
	tr.Close()

	var rec map[string]any
	for deadline := time.Now().Add(10 * time.Second); rec == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(records)
			t.Fatalf("no flow record of the HTTP/3 connection in 10 s:\n%s", b)
		}
		b, _ := os.ReadFile(records)
		for _, line := range bytes.Split(b, []byte("\n")) {
			var r map[string]any
			if json.Unmarshal(line, &r) == nil && r["kind"] == "flow" {
				rec = r
			}
		}
	}
	for k, want := range map[string]any{"listener": "edge", "destination_address": addr, "tls_version": "TLS 1.3",
		"source_identity": "spiffe://td/ns/x/sa/y", "close_reason": "peer_closed"} {
		if rec[k] != want {
			t.Errorf("%s = %v, want %v (record %v)", k, rec[k], want, rec)
		}
	}
	if rec["tls_cipher"] == "" || rec["source_address"] == "" {
		t.Errorf("no cipher or source address: %v", rec)
	}
	// Two requests of a few hundred bytes each way, and the handshake:
	// more than a kilobyte, less than a hundred.
	for _, k := range []string{"bytes_in", "bytes_out"} {
		if n, _ := rec[k].(float64); n < 1000 || n > 100000 {
			t.Errorf("%s = %v", k, rec[k])
		}
	}
}
