package h2_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/prototest"
	"github.com/wasmgate/wasmgate/proxy/internal/testpki"
)

// TestMutualTLSRequired refuses, through the proxy, a client without a
// certificate, one whose certificate another CA signed and one whose
// certificate expired, each with the TLS alert that says why; a good
// client is served and its filter sees its identity.
func TestMutualTLSRequired(t *testing.T) {
	p := prototest.NewPKI(t)
	plugins := &prototest.IdentityPlugins{}
	srv := prototest.Start(t, strings.Replace(webConfig, "client_auth: optional", "client_auth: required", 1), map[string]string{
		"cert": p.CertFile, "key": p.KeyFile, "clientca": p.ClientCAFile, "web": prototest.Echo(t),
	}, plugins)
	url := "https://" + srv.Addr("tls").String() + "/mtls"
	other := testpki.NewCA(t, "other ca")

	for _, tc := range []struct {
		name    string
		cert    *testpki.Cert
		wantErr string
	}{
		{"no certificate", nil, "certificate required"},
		{"another CA", other.Issue(t, testpki.Leaf{CommonName: "svc-y", Client: true}), "unknown certificate authority"},
		{"expired", p.ClientCA.Issue(t, testpki.Leaf{CommonName: "svc-y", Client: true, NotAfter: time.Now().Add(-time.Minute)}), "expired certificate"},
		{"good", p.Client, ""},
	} {
		for _, alpn := range []string{"h2", "http/1.1"} {
			t.Run(tc.name+" "+alpn, func(t *testing.T) {
				conf := p.ClientTLS(alpn)
				conf.Certificates = nil
				if c := tc.cert; c != nil {
					conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c.TLS, nil }
				}
				if tc.wantErr != "" {
					// The refusal is a TLS alert, read where TLS 1.3 delivers
					// it: on the client's first read after its handshake.
					c, err := tls.Dial("tcp", srv.Addr("tls").String(), conf)
					if err == nil {
						_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
						_, err = c.Read(make([]byte, 1))
						c.Close()
					}
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("error %v, want %q", err, tc.wantErr)
					}
					return
				}
				var rt http.RoundTripper = &http.Transport{TLSClientConfig: conf}
				if alpn == "h2" {
					rt = prototest.H2Transport(conf)
				}
				resp, err := (&http.Client{Transport: rt, Timeout: 5 * time.Second}).Get(url)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				s := plugins.Last(t)
				if resp.StatusCode != 200 || s.TLS == nil || !s.TLS.PeerVerified || s.TLS.PeerURISANs[0] != "spiffe://td/ns/x/sa/y" {
					t.Errorf("status %d, filter saw %+v", resp.StatusCode, s.TLS)
				}
			})
		}
	}
}
