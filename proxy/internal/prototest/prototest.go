// Package prototest runs a proxy with TLS and the protocols beside
// HTTP/1.1 for tests: certificate material, an echoing upstream and a
// native filter that records what it sees of each exchange.
package prototest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/internal/testpki"
)

// pki is the certificate material of a test: a CA for servers, one for
// clients, the proxy's certificate and a good client certificate.
type PKI struct {
	CA, ClientCA   *testpki.CA
	CertFile       string
	KeyFile        string
	ClientCAFile   string
	CAFile         string
	Client         *testpki.Cert
	Upstream       *testpki.Cert
	UpstreamClient *testpki.Cert
}

func NewPKI(t testing.TB) *PKI {
	dir := t.TempDir()
	p := &PKI{CA: testpki.NewCA(t, "server ca"), ClientCA: testpki.NewCA(t, "client ca")}
	p.CertFile, p.KeyFile = p.CA.Issue(t, testpki.Leaf{
		CommonName: "proxy", DNS: []string{"proxy.test"}, URIs: []string{"spiffe://td/ns/edge/sa/proxy"},
	}).Write(t, dir, "proxy")
	p.ClientCAFile = dir + "/client-ca.pem"
	testpki.WriteFile(t, p.ClientCAFile, p.ClientCA.PEM)
	p.CAFile = dir + "/ca.pem"
	testpki.WriteFile(t, p.CAFile, p.CA.PEM)
	p.Client = p.ClientCA.Issue(t, testpki.Leaf{
		CommonName: "svc-y", Client: true, DNS: []string{"y.x.svc"}, URIs: []string{"spiffe://td/ns/x/sa/y"},
	})
	p.Upstream = p.CA.Issue(t, testpki.Leaf{CommonName: "upstream", DNS: []string{"upstream.test"}})
	p.UpstreamClient = p.ClientCA.Issue(t, testpki.Leaf{CommonName: "proxy-client", Client: true, URIs: []string{"spiffe://td/ns/edge/sa/proxy"}})
	return p
}

// clientTLS is a client configuration that trusts the proxy and presents
// the good client certificate.
func (p *PKI) ClientTLS(alpn ...string) *tls.Config {
	return &tls.Config{
		RootCAs:      p.CA.Pool(),
		ServerName:   "proxy.test",
		Certificates: []tls.Certificate{p.Client.TLS},
		NextProtos:   alpn,
	}
}

// seen is what the identity filter saw of one request.
type Seen struct {
	Protocol string
	TLS      *filter.TLSInfo
	Path     string
	// Headers are the request's headers as the filter saw them, names in
	// lower case.
	Headers map[string]string
}

// identityPlugins stands in for the Wasm host: every plugin is a native
// filter that records the exchange's protocol and TLS identity.
type IdentityPlugins struct {
	mu   sync.Mutex
	seen []Seen
}

func (p *IdentityPlugins) Prepare(context.Context, []config.Plugin, filter.Upstreams) (filter.PluginSet, error) {
	return p, nil
}
func (p *IdentityPlugins) Activate() {}
func (p *IdentityPlugins) Discard()  {}
func (p *IdentityPlugins) Factory(config.FilterRef, string) (filter.Factory, error) {
	return p, nil
}
func (p *IdentityPlugins) Name() string { return "identity" }
func (p *IdentityPlugins) NewStream(*filter.Exchange) (filter.Stream, error) {
	return identityStream{p}, nil
}

func (p *IdentityPlugins) Last(t testing.TB) Seen {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seen) == 0 {
		t.Fatal("the filter saw no request")
	}
	return p.seen[len(p.seen)-1]
}

func (p *IdentityPlugins) All() []Seen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Seen(nil), p.seen...)
}

type identityStream struct{ p *IdentityPlugins }

func (s identityStream) OnRequestHeaders(x *filter.Exchange, _ bool) filter.Status {
	headers := map[string]string{}
	for k, v := range x.Ctx.Request.Header.All() {
		headers[strings.ToLower(string(k))] = string(v)
	}
	s.p.mu.Lock()
	s.p.seen = append(s.p.seen, Seen{Protocol: x.Protocol, TLS: x.Conn.TLS, Path: string(x.Ctx.Path()), Headers: headers})
	s.p.mu.Unlock()
	return filter.Continue
}
func (identityStream) OnRequestBody(*filter.Exchange, *filter.Body, bool) filter.Status {
	return filter.Continue
}
func (identityStream) OnRequestTrailers(*filter.Exchange) filter.Status { return filter.Continue }
func (identityStream) OnResponseHeaders(*filter.Exchange, bool) filter.Status {
	return filter.Continue
}
func (identityStream) OnResponseBody(*filter.Exchange, *filter.Body, bool) filter.Status {
	return filter.Continue
}
func (identityStream) OnResponseTrailers(*filter.Exchange) filter.Status { return filter.Continue }
func (identityStream) OnLog(*filter.Exchange)                            {}
func (identityStream) Done(*filter.Exchange)                             {}

// start applies a configuration, {{name}} placeholders filled from vars, to
// a new proxy and returns it.
func Start(t testing.TB, yaml string, vars map[string]string, plugins filter.Plugins) *proxy.Server {
	t.Helper()
	for k, v := range vars {
		yaml = strings.ReplaceAll(yaml, "{{"+k+"}}", v)
	}
	cfg, err := config.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.NewServer(proxy.Options{Plugins: plugins})
	if err := srv.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv
}

// echo is an HTTP/1.1 upstream that describes the request it got.
func Echo(t testing.TB) string {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(500 * time.Millisecond)
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"proto": r.Proto,
			"xfcc":  r.Header.Get("X-Forwarded-Client-Cert"),
			"xfp":   r.Header.Get("X-Forwarded-Proto"),
			"path":  r.URL.RequestURI(),
			"body":  string(body),
			"te":    strings.Join(r.TransferEncoding, ","),
			"cl":    strconv.FormatInt(r.ContentLength, 10),
		})
	}))
	t.Cleanup(up.Close)
	return up.Listener.Addr().String()
}

// H2CTransport speaks HTTP/2 with prior knowledge over cleartext.
func H2CTransport() *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: &p}
}

// H2Transport speaks HTTP/2 over TLS only.
func H2Transport(conf *tls.Config) *http.Transport {
	var p http.Protocols
	p.SetHTTP2(true)
	return &http.Transport{Protocols: &p, TLSClientConfig: conf}
}
