package tlsconf_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/internal/testpki"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// server is a tlsconf.Server behind a loopback listener that answers every
// handshake with one byte and reports each connection's identity.
type server struct {
	srv  *tlsconf.Server
	addr string
	ids  chan *filter.TLSInfo
}

func serve(t *testing.T, cfg config.ListenerTLS) *server {
	t.Helper()
	srv, err := tlsconf.NewServer(cfg, []string{"h2", "http/1.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tlsconf.NewListener(inner, srv)
	s := &server{srv: srv, addr: inner.Addr().String(), ids: make(chan *filter.TLSInfo, 1024)}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tlsconf.Conn)
				if tc.Handshake() != nil {
					return
				}
				select {
				case s.ids <- tc.TLSInfo():
				default:
				}
				_, _ = c.Write([]byte("x"))
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	return s
}

// dial handshakes and reads the server's byte, which is where a TLS 1.3
// client learns that its certificate was refused.
func (s *server) dial(conf *tls.Config) (*tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", s.addr, conf)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return nil, err
	}
	cs := c.ConnectionState()
	return &cs, nil
}

func TestServerNameSelection(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	defCert, defKey := ca.Issue(t, testpki.Leaf{CommonName: "default", DNS: []string{"default.test"}}).Write(t, dir, "default")
	aCert, aKey := ca.Issue(t, testpki.Leaf{CommonName: "a", DNS: []string{"a.example.com"}}).Write(t, dir, "a")
	wCert, wKey := ca.Issue(t, testpki.Leaf{CommonName: "wild", DNS: []string{"*.wild.example.com"}}).Write(t, dir, "wild")
	s := serve(t, config.ListenerTLS{Certificates: []config.CertificateFiles{
		{CertFile: defCert, KeyFile: defKey},
		{CertFile: aCert, KeyFile: aKey},
		{CertFile: wCert, KeyFile: wKey, ServerNames: []string{"*.wild.example.com", "exact.other.test"}},
	}})
	for _, tc := range []struct{ sni, want string }{
		{"a.example.com", "a"},
		{"A.Example.COM", "a"},
		{"x.wild.example.com", "wild"},
		{"exact.other.test", "wild"},
		{"two.x.wild.example.com", "default"},
		{"unknown.test", "default"},
		{"", "default"},
	} {
		t.Run(tc.sni, func(t *testing.T) {
			cs, err := s.dial(&tls.Config{ServerName: tc.sni, InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			if got := cs.PeerCertificates[0].Subject.CommonName; got != tc.want {
				t.Errorf("SNI %q got certificate %q, want %q", tc.sni, got, tc.want)
			}
			if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != "h2" {
				t.Errorf("version %x, ALPN %q; want TLS 1.3 and h2", cs.Version, cs.NegotiatedProtocol)
			}
		})
	}
}

func TestVersions(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "s", DNS: []string{"s.test"}}).Write(t, dir, "s")
	s := serve(t, config.ListenerTLS{Certificates: []config.CertificateFiles{{CertFile: cert, KeyFile: key}}})
	if _, err := s.dial(&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10}); err == nil {
		t.Error("a TLS 1.1 client was served; the default minimum is 1.2")
	}
	cs, err := s.dial(&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err != nil || cs.Version != tls.VersionTLS12 {
		t.Errorf("TLS 1.2 client: %v", err)
	}
	s13 := serve(t, config.ListenerTLS{MinVersion: "1.3", Certificates: []config.CertificateFiles{{CertFile: cert, KeyFile: key}}})
	if _, err := s13.dial(&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err == nil {
		t.Error("a TLS 1.2 client was served with min_version 1.3")
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "server ca")
	clientCA := testpki.NewCA(t, "client ca")
	otherCA := testpki.NewCA(t, "other ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "proxy", DNS: []string{"proxy.test"}, URIs: []string{"spiffe://td/ns/edge/sa/proxy"}}).Write(t, dir, "server")
	caFile := dir + "/client-ca.pem"
	testpki.WriteFile(t, caFile, clientCA.PEM)

	good := clientCA.Issue(t, testpki.Leaf{CommonName: "svc-y", Client: true, DNS: []string{"y.ns.svc", "y"}, URIs: []string{"spiffe://td/ns/x/sa/y"}})
	foreign := otherCA.Issue(t, testpki.Leaf{CommonName: "svc-y", Client: true, URIs: []string{"spiffe://td/ns/x/sa/y"}})
	expired := clientCA.Issue(t, testpki.Leaf{CommonName: "svc-y", Client: true, NotAfter: time.Now().Add(-time.Hour)})

	certs := []config.CertificateFiles{{CertFile: cert, KeyFile: key}}
	required := serve(t, config.ListenerTLS{Certificates: certs, ClientCAFile: caFile})
	optional := serve(t, config.ListenerTLS{Certificates: certs, ClientCAFile: caFile, ClientAuth: config.ClientAuthOptional})
	client := func(c *testpki.Cert) *tls.Config {
		conf := &tls.Config{RootCAs: ca.Pool(), ServerName: "proxy.test"}
		if c != nil {
			// Sent whatever the server's acceptable CAs are, as a
			// misconfigured or hostile client would.
			conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c.TLS, nil }
		}
		return conf
	}

	for _, tc := range []struct {
		name    string
		srv     *server
		cert    *testpki.Cert
		wantErr string
	}{
		{"required/none", required, nil, "certificate required"},
		{"required/other CA", required, foreign, "unknown certificate authority"},
		{"required/expired", required, expired, "expired certificate"},
		{"required/good", required, good, ""},
		{"optional/none", optional, nil, ""},
		{"optional/other CA", optional, foreign, "unknown certificate authority"},
		{"optional/good", optional, good, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drain(tc.srv.ids)
			_, err := tc.srv.dial(client(tc.cert))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			info := <-tc.srv.ids
			if info.Version != "TLSv1.3" || info.ServerName != "proxy.test" || info.ALPN != "" {
				t.Errorf("version %q, SNI %q, ALPN %q", info.Version, info.ServerName, info.ALPN)
			}
			if info.LocalSubject == "" || len(info.LocalURISANs) != 1 || info.LocalURISANs[0] != "spiffe://td/ns/edge/sa/proxy" {
				t.Errorf("local identity %q %v", info.LocalSubject, info.LocalURISANs)
			}
			if tc.cert == nil {
				if info.PeerPresented || info.PeerVerified {
					t.Errorf("no client certificate, but presented=%v verified=%v", info.PeerPresented, info.PeerVerified)
				}
				return
			}
			sum := sha256.Sum256(tc.cert.Leaf.Raw)
			want := &filter.TLSInfo{
				PeerPresented: true, PeerVerified: true,
				PeerSubject: "CN=svc-y,O=wasmgate tests",
				PeerURISANs: []string{"spiffe://td/ns/x/sa/y"},
				PeerDNSSANs: []string{"y.ns.svc", "y"},
				PeerSHA256:  hex.EncodeToString(sum[:]),
			}
			if info.PeerPresented != want.PeerPresented || info.PeerVerified != want.PeerVerified ||
				info.PeerSubject != want.PeerSubject || info.PeerSHA256 != want.PeerSHA256 ||
				strings.Join(info.PeerURISANs, ",") != strings.Join(want.PeerURISANs, ",") ||
				strings.Join(info.PeerDNSSANs, ",") != strings.Join(want.PeerDNSSANs, ",") {
				t.Errorf("peer identity\n got %+v\nwant %+v", info, want)
			}
		})
	}
}

func drain(c chan *filter.TLSInfo) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func TestAppendXFCC(t *testing.T) {
	for _, tc := range []struct {
		name string
		info filter.TLSInfo
		want string
	}{
		{
			name: "full",
			info: filter.TLSInfo{
				LocalURISANs: []string{"spiffe://td/ns/edge/sa/proxy"},
				PeerSHA256:   "abc123",
				PeerSubject:  "CN=svc-y,O=wasmgate tests",
				PeerURISANs:  []string{"spiffe://td/ns/x/sa/y"},
				PeerDNSSANs:  []string{"y.ns.svc", "y"},
			},
			want: `By=spiffe://td/ns/edge/sa/proxy;Hash=abc123;Subject="CN=svc-y,O=wasmgate tests";URI=spiffe://td/ns/x/sa/y;DNS=y.ns.svc;DNS=y`,
		},
		{
			name: "no proxy URI, no SANs",
			info: filter.TLSInfo{PeerSHA256: "ff", PeerSubject: "CN=a"},
			want: `Hash=ff;Subject="CN=a"`,
		},
		{
			name: "quotes and separators",
			info: filter.TLSInfo{PeerSHA256: "ff", PeerSubject: `CN=a "b"`, PeerURISANs: []string{"urn:x;y=z"}},
			want: `Hash=ff;Subject="CN=a \"b\"";URI="urn:x;y=z"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(tlsconf.AppendXFCC(nil, &tc.info)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestReloadOnChange rewrites the certificate files under a running
// server and waits for the new certificate to be served.
func TestReloadOnChange(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "v1", DNS: []string{"s.test"}}).Write(t, dir, "s")
	s := serve(t, config.ListenerTLS{Certificates: []config.CertificateFiles{{CertFile: cert, KeyFile: key}}})
	ctx := t.Context()
	var failures atomic.Int64
	s.srv.Watch(ctx, func(error) { failures.Add(1) })
	time.Sleep(50 * time.Millisecond) // let the watchers start

	served := func() string {
		cs, err := s.dial(&tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		return cs.PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "v1" {
		t.Fatalf("served %q", got)
	}

	// A broken file is refused and the old certificate stays.
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return failures.Load() > 0 })
	if got := served(); got != "v1" {
		t.Fatalf("after a broken file, served %q", got)
	}

	ca.Issue(t, testpki.Leaf{CommonName: "v2", DNS: []string{"s.test"}}).Write(t, dir, "s")
	waitFor(t, func() bool { return served() == "v2" })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRotationUnderLoad handshakes from several clients without pause
// while the certificate is rotated again and again: no handshake fails and
// every rotation is served.
func TestRotationUnderLoad(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "gen-0", DNS: []string{"s.test"}}).Write(t, dir, "s")
	s := serve(t, config.ListenerTLS{Certificates: []config.CertificateFiles{{CertFile: cert, KeyFile: key}}})
	s.srv.Watch(t.Context(), func(err error) {})
	time.Sleep(50 * time.Millisecond)

	conf := &tls.Config{RootCAs: ca.Pool(), ServerName: "s.test"}
	var (
		stop       atomic.Bool
		handshakes atomic.Int64
		mu         sync.Mutex
		seen       = map[string]bool{}
		errs       []error
		wg         sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				cs, err := s.dial(conf)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					seen[cs.PeerCertificates[0].Subject.CommonName] = true
				}
				mu.Unlock()
				handshakes.Add(1)
			}
		})
	}
	const generations = 5
	for gen := 1; gen <= generations; gen++ {
		time.Sleep(150 * time.Millisecond)
		name := "gen-" + string(rune('0'+gen))
		ca.Issue(t, testpki.Leaf{CommonName: name, DNS: []string{"s.test"}}).Write(t, dir, "s")
		waitFor(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return seen[name]
		})
	}
	stop.Store(true)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d handshakes failed during rotation; first: %v", len(errs), handshakes.Load(), errors.Join(errs[0]))
	}
	t.Logf("%d handshakes, %d certificates served, none failed", handshakes.Load(), len(seen))
}

// TestInMemoryCertificates serves a certificate of the configuration and
// swaps it with SetCertificates, as a changed file is swapped by Reload.
func TestInMemoryCertificates(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	v1 := ca.Issue(t, testpki.Leaf{CommonName: "v1", DNS: []string{"site.test"}})
	v2 := ca.Issue(t, testpki.Leaf{CommonName: "v2", DNS: []string{"site.test"}})
	certs := func(c *testpki.Cert) []config.Certificate {
		return []config.Certificate{
			{Name: "other", CertPEM: string(v2.CertPEM), KeyPEM: string(v2.KeyPEM)},
			{Name: "site", CertPEM: string(c.CertPEM), KeyPEM: string(c.KeyPEM)},
		}
	}
	cfg := config.ListenerTLS{Certificates: []config.CertificateFiles{{Certificate: "site"}}}
	srv, err := tlsconf.NewServer(cfg, nil, certs(v1))
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tlsconf.NewListener(inner, srv)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tlsconf.Conn).Handshake()
			}()
		}
	}()
	served := func() string {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", inner.Addr().String(),
			&tls.Config{ServerName: "site.test", RootCAs: ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "v1" {
		t.Fatalf("served %q, want v1", got)
	}
	if err := srv.SetCertificates(certs(v2)); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != "v2" {
		t.Fatalf("after SetCertificates served %q, want v2", got)
	}
	bad := certs(v1)
	bad[1].KeyPEM = string(v2.KeyPEM)
	if err := srv.SetCertificates(bad); err == nil {
		t.Fatal("a certificate with another's key was accepted")
	}
	if got := served(); got != "v2" {
		t.Fatalf("after a failed SetCertificates served %q, want v2 still", got)
	}
	if len(srv.Files()) != 0 {
		t.Fatalf("Files() = %v, want none for an in-memory certificate", srv.Files())
	}
}

// TestClientConfigRotation: an upstream connection's CA file and client
// certificate are read again when they change on disk, so rotated files
// reach new connections without a configuration change; verification
// still checks the server's name.
func TestClientConfigRotation(t *testing.T) {
	dir := t.TempDir()
	serverCA := testpki.NewCA(t, "server ca")
	otherCA := testpki.NewCA(t, "other ca")
	clientCA := testpki.NewCA(t, "client ca")
	cert, key := serverCA.Issue(t, testpki.Leaf{CommonName: "up", DNS: []string{"up.test"}}).Write(t, dir, "server")
	clientCAFile := dir + "/client-ca.pem"
	testpki.WriteFile(t, clientCAFile, clientCA.PEM)
	s := serve(t, config.ListenerTLS{Certificates: []config.CertificateFiles{{CertFile: cert, KeyFile: key}}, ClientCAFile: clientCAFile})

	caFile := dir + "/upstream-ca.pem"
	testpki.WriteFile(t, caFile, otherCA.PEM) // the wrong CA, at first
	clientCert, clientKey := clientCA.Issue(t, testpki.Leaf{CommonName: "first", Client: true}).Write(t, dir, "client")
	conf, err := tlsconf.ClientConfig(&config.ClusterTLS{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey, SNI: "up.test"},
		s.addr, config.ProtocolHTTP1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.dial(conf); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("with the wrong CA: %v", err)
	}

	testpki.WriteFile(t, caFile, serverCA.PEM)
	waitFor(t, func() bool { _, err := s.dial(conf); return err == nil })
	peer := func() string {
		drain(s.ids)
		if _, err := s.dial(conf); err != nil {
			return err.Error()
		}
		return (<-s.ids).PeerSubject
	}
	if p := peer(); !strings.Contains(p, "first") {
		t.Fatalf("client certificate %q, want the first", p)
	}
	clientCA.Issue(t, testpki.Leaf{CommonName: "second", Client: true}).Write(t, dir, "client")
	waitFor(t, func() bool { return strings.Contains(peer(), "second") })

	other, err := tlsconf.ClientConfig(&config.ClusterTLS{CAFile: caFile, SNI: "other.test"}, s.addr, config.ProtocolHTTP1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.dial(other); err == nil || !strings.Contains(err.Error(), "other.test") {
		t.Fatalf("a server certificate for another name: %v", err)
	}
}
