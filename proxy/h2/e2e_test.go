package h2_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/wasmgate/wasmgate/proxy/internal/prototest"
)

const webConfig = `
admin: {address: "off"}
listeners:
- name: tls
  address: "127.0.0.1:0"
  tls:
    certificates: [{cert_file: "{{cert}}", key_file: "{{key}}"}]
    client_ca_file: "{{clientca}}"
    client_auth: optional
    forward_client_cert: sanitize_set
- name: plain
  address: "127.0.0.1:0"
  http2: {h2c: true}
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

func getJSON(t *testing.T, c *http.Client, url string, hdr map[string]string) (*http.Response, map[string]string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatalf("%s: status %d: %v", url, resp.StatusCode, err)
	}
	return resp, got
}

func TestDownstreamProtocols(t *testing.T) {
	p := prototest.NewPKI(t)
	plugins := &prototest.IdentityPlugins{}
	srv := prototest.Start(t, webConfig, map[string]string{
		"cert": p.CertFile, "key": p.KeyFile, "clientca": p.ClientCAFile, "web": prototest.Echo(t),
	}, plugins)
	tlsURL := "https://" + srv.Addr("tls").String()
	plainURL := "http://" + srv.Addr("plain").String()

	wantXFCC := func(t *testing.T, got string) {
		t.Helper()
		for _, part := range []string{"By=spiffe://td/ns/edge/sa/proxy", "Hash=", `Subject="CN=svc-y,O=wasmgate tests"`, "URI=spiffe://td/ns/x/sa/y", "DNS=y.x.svc"} {
			if !strings.Contains(got, part) {
				t.Errorf("X-Forwarded-Client-Cert %q lacks %q", got, part)
			}
		}
		if strings.Contains(got, "evil") {
			t.Errorf("the client's own X-Forwarded-Client-Cert went upstream: %q", got)
		}
	}
	forged := map[string]string{"X-Forwarded-Client-Cert": "By=evil;URI=spiffe://evil"}

	t.Run("TLS HTTP/1.1", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: p.ClientTLS("http/1.1")}}
		resp, got := getJSON(t, c, tlsURL+"/a?x=1", forged)
		if resp.ProtoMajor != 1 || got["path"] != "/a?x=1" || got["xfp"] != "https" {
			t.Errorf("proto %s, upstream saw %v", resp.Proto, got)
		}
		wantXFCC(t, got["xfcc"])
		s := plugins.Last(t)
		if s.Protocol != "HTTP/1.1" || s.TLS == nil || s.TLS.ALPN != "http/1.1" {
			t.Fatalf("filter saw %+v", s)
		}
	})

	t.Run("TLS HTTP/2", func(t *testing.T) {
		c := &http.Client{Transport: prototest.H2Transport(p.ClientTLS("h2"))}
		for i := range 3 {
			resp, got := getJSON(t, c, fmt.Sprintf("%s/h2/%d", tlsURL, i), forged)
			if resp.ProtoMajor != 2 || got["path"] != fmt.Sprintf("/h2/%d", i) || got["xfp"] != "https" {
				t.Errorf("proto %s, upstream saw %v", resp.Proto, got)
			}
			wantXFCC(t, got["xfcc"])
		}
		all := plugins.All()
		last3 := all[len(all)-3:]
		for _, s := range last3 {
			info := s.TLS
			if s.Protocol != "HTTP/2" || info == nil {
				t.Fatalf("filter saw %+v", s)
			}
			if info.Version != "TLSv1.3" || info.ServerName != "proxy.test" || info.ALPN != "h2" ||
				!info.PeerVerified || info.PeerSubject != "CN=svc-y,O=wasmgate tests" ||
				len(info.PeerURISANs) != 1 || info.PeerURISANs[0] != "spiffe://td/ns/x/sa/y" ||
				len(info.PeerSHA256) != 64 {
				t.Errorf("identity %+v", info)
			}
			// One connection, one identity: computed once, shared.
			if info != last3[0].TLS {
				t.Errorf("the identity was computed again for a request on the same connection")
			}
		}
	})

	t.Run("TLS without a client certificate", func(t *testing.T) {
		conf := p.ClientTLS("h2")
		conf.Certificates = nil
		c := &http.Client{Transport: prototest.H2Transport(conf)}
		_, got := getJSON(t, c, tlsURL+"/anon", forged)
		if got["xfcc"] != "" {
			t.Errorf("XFCC %q sent for a client without a certificate", got["xfcc"])
		}
		if s := plugins.Last(t); s.TLS == nil || s.TLS.PeerPresented {
			t.Errorf("filter saw %+v", s.TLS)
		}
	})

	t.Run("h2c prior knowledge", func(t *testing.T) {
		c := &http.Client{Transport: prototest.H2CTransport()}
		resp, got := getJSON(t, c, plainURL+"/h2c", forged)
		if resp.ProtoMajor != 2 || got["path"] != "/h2c" || got["xfcc"] != "" || got["xfp"] != "http" {
			t.Errorf("proto %s, upstream saw %v", resp.Proto, got)
		}
		if s := plugins.Last(t); s.Protocol != "HTTP/2" || s.TLS != nil {
			t.Errorf("filter saw %+v", s)
		}
	})

	t.Run("HTTP/1.1 beside h2c", func(t *testing.T) {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut} {
			req, _ := http.NewRequest(method, plainURL+"/h1", strings.NewReader("abc"))
			req.Header.Set("X-Forwarded-Client-Cert", "By=evil")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]string
			_ = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
			if resp.ProtoMajor != 1 || got["path"] != "/h1" || got["xfcc"] != "" {
				t.Errorf("%s: proto %s, upstream saw %v", method, resp.Proto, got)
			}
			if method != http.MethodGet && got["body"] != "abc" {
				t.Errorf("%s: body %q", method, got["body"])
			}
		}
	})

	t.Run("request body over HTTP/2", func(t *testing.T) {
		c := &http.Client{Transport: prototest.H2CTransport()}
		body := strings.Repeat("0123456789", 20000) // beyond one flow-control window of a frame
		resp, err := c.Post(plainURL+"/upload", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if got["body"] != body {
			t.Errorf("upstream got %d bytes, want %d", len(got["body"]), len(body))
		}
	})

	t.Run("header list too large", func(t *testing.T) {
		c := &http.Client{Transport: prototest.H2CTransport()}
		req, _ := http.NewRequest(http.MethodGet, plainURL+"/big", nil)
		for i := range 10 {
			req.Header.Set(fmt.Sprintf("X-Big-%d", i), strings.Repeat("a", 8<<10))
		}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("status %d, want 431", resp.StatusCode)
			}
		} else if !strings.Contains(err.Error(), "GOAWAY") && !strings.Contains(err.Error(), "advertised limit") {
			// The proxy advertises its limit in SETTINGS, which a client
			// that has read them honours itself; otherwise x/net refuses
			// the block with 431, or with a connection error when the
			// block is cut short.
			t.Errorf("unexpected error %v", err)
		}
	})
}

// TestRapidReset opens and at once resets stream after stream on one
// connection, as the CVE-2023-44487 attack does, against slow upstream
// requests: the proxy answers GOAWAY ENHANCE_YOUR_CALM and keeps serving
// other clients.
func TestRapidReset(t *testing.T) {
	srv := prototest.Start(t, `
admin: {address: "off"}
listeners:
- name: plain
  address: "127.0.0.1:0"
  http2: {h2c: true, max_concurrent_streams: 10}
clusters:
- name: web
  endpoints: [{address: "{{web}}"}]
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - cluster: web
`, map[string]string{"web": prototest.Echo(t)}, nil)
	addr := srv.Addr("plain").String()

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// The header block of GET /slow, HPACK-encoded without indexing.
	block := hpackGET(addr, "/slow")
	done := make(chan error, 1)
	go func() {
		for id := uint32(1); id < 2000; id += 2 {
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
				done <- nil // the proxy closed the connection
				return
			}
			if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				done <- nil
				return
			}
		}
		done <- nil
	}()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var goAway *http2.GoAwayFrame
	for goAway == nil {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			goAway = g
		}
	}
	<-done
	if goAway.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", goAway.ErrCode)
	}

	cl := &http.Client{Transport: prototest.H2CTransport(), Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/after")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after the flood, status %d", resp.StatusCode)
	}
}

func hpackGET(authority, path string) []byte {
	var b []byte
	field := func(name, value string) {
		b = append(b, 0x00) // literal without indexing, new name
		b = appendHPACKString(b, name)
		b = appendHPACKString(b, value)
	}
	field(":method", "GET")
	field(":scheme", "http")
	field(":authority", authority)
	field(":path", path)
	return b
}

func appendHPACKString(b []byte, s string) []byte {
	if len(s) < 127 {
		b = append(b, byte(len(s)))
	} else {
		n := len(s) - 127
		b = append(b, 127)
		for n >= 128 {
			b = append(b, byte(n%128+128))
			n /= 128
		}
		b = append(b, byte(n))
	}
	return append(b, s...)
}

// Filters see the Content-Length an HTTP/2 client sent, and none when it
// sent none, whether its stream ended with its headers or its body
// streamed. (Go's client sends "content-length: 0" for a POST, PUT or
// PATCH without a body, and none for a GET.)
func TestFiltersSeeTheClientsLength(t *testing.T) {
	p := prototest.NewPKI(t)
	plugins := &prototest.IdentityPlugins{}
	srv := prototest.Start(t, webConfig, map[string]string{
		"cert": p.CertFile, "key": p.KeyFile, "clientca": p.ClientCAFile, "web": prototest.Echo(t),
	}, plugins)
	c := &http.Client{Transport: prototest.H2Transport(p.ClientTLS("h2"))}
	for _, tt := range []struct {
		name, method string
		body         io.Reader
		want         string // the Content-Length the filter sees; "" for none
	}{
		{"GET", http.MethodGet, nil, ""},
		{"POST with no body", http.MethodPost, nil, "0"},
		{"POST of unknown length", http.MethodPost, struct{ io.Reader }{strings.NewReader("streamed")}, ""},
		{"POST with a length", http.MethodPost, strings.NewReader("hello"), "5"},
		{"DELETE", http.MethodDelete, nil, ""},
	} {
		req, _ := http.NewRequest(tt.method, "https://"+srv.Addr("tls").String()+"/length", tt.body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		s := plugins.Last(t)
		if got := s.Headers["content-length"]; resp.ProtoMajor != 2 || got != tt.want {
			t.Errorf("%s over %s: the filter saw Content-Length %q, want %q (headers %v)", tt.name, resp.Proto, got, tt.want, s.Headers)
		}
	}
}
