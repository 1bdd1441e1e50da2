package cluster_test

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/internal/prototest"
	"github.com/wasmgate/wasmgate/proxy/internal/testpki"
)

// TestUpstreamTLS sends requests through HTTP/1.1 clusters over TLS to an
// upstream that requires a client certificate.
func TestUpstreamTLS(t *testing.T) {
	p := prototest.NewPKI(t)
	dir := t.TempDir()
	ucert, ukey := p.UpstreamClient.Write(t, dir, "client")
	otherCA := testpki.NewCA(t, "other")
	otherFile := dir + "/other.pem"
	testpki.WriteFile(t, otherFile, otherCA.PEM)

	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := "anonymous"
		if len(r.TLS.PeerCertificates) > 0 {
			name = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		_, _ = io.WriteString(w, name+" "+r.TLS.ServerName+" "+r.TLS.NegotiatedProtocol)
	}))
	up.TLS = &tls.Config{
		Certificates: []tls.Certificate{p.Upstream.TLS},
		ClientCAs:    p.ClientCA.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		NextProtos:   []string{"http/1.1"},
	}
	up.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	up.StartTLS()
	t.Cleanup(up.Close)

	core, logs := observer.New(zap.WarnLevel)
	yaml := `
admin: {address: "off"}
listeners:
- name: main
  address: "127.0.0.1:0"
clusters:
- name: mtls
  tls: {sni: upstream.test, ca_file: "{{ca}}", cert_file: "{{ucert}}", key_file: "{{ukey}}"}
  endpoints: [{address: "{{up}}"}]
- name: nocert
  tls: {sni: upstream.test, ca_file: "{{ca}}"}
  endpoints: [{address: "{{up}}"}]
- name: wrongca
  tls: {sni: upstream.test, ca_file: "{{other}}"}
  endpoints: [{address: "{{up}}"}]
- name: wrongname
  tls: {sni: elsewhere.test, ca_file: "{{ca}}"}
  endpoints: [{address: "{{up}}"}]
- name: insecure
  tls: {insecure_skip_verify_i_know_what_i_am_doing: true}
  endpoints: [{address: "{{up}}"}]
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - {match: {prefix: /mtls}, cluster: mtls}
  - {match: {prefix: /nocert}, cluster: nocert}
  - {match: {prefix: /wrongca}, cluster: wrongca}
  - {match: {prefix: /wrongname}, cluster: wrongname}
  - {match: {prefix: /insecure}, cluster: insecure}
`
	for k, v := range map[string]string{"ca": p.CAFile, "ucert": ucert, "ukey": ukey, "up": up.Listener.Addr().String(), "other": otherFile} {
		yaml = strings.ReplaceAll(yaml, "{{"+k+"}}", v)
	}
	cfg, err := config.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.NewServer(proxy.Options{Logger: zap.New(core)})
	if err := srv.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	base := "http://" + srv.Addr("main").String()

	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/mtls", 200, "proxy-client upstream.test http/1.1"},
		{"/nocert", 200, "anonymous upstream.test http/1.1"},
		{"/wrongca", 502, ""},
		{"/wrongname", 502, ""},
		{"/insecure", 200, "anonymous  http/1.1"}, // no SNI for an IP address
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(base + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.HasPrefix(string(b), tc.body) {
				t.Errorf("status %d body %q, want %d %q", resp.StatusCode, b, tc.status, tc.body)
			}
		})
	}
	warned := logs.FilterField(zap.String("cluster", "insecure")).Len()
	if warned != 1 {
		t.Errorf("%d warnings for the insecure cluster, want 1", warned)
	}
}
