package tlsconf_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// root is a trust domain's CA for the tests.
type root struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serials atomic.Int64

func newRoot(t testing.TB, td string) *root {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serials.Add(1)), Subject: pkix.Name{CommonName: td + " root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &root{td: spiffeid.RequireTrustDomainFromString(td), cert: cert, key: key}
}

// svid issues an X.509-SVID for a workload path of the root's domain.
func (r *root) svid(t testing.TB, path string) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://" + r.td.Name() + path)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serials.Add(1)), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, key.Public(), r.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// mesh is a workload identity whose certificate and bundle the test
// changes, as the identity agent does on renewal and rotation.
type mesh struct {
	cert   atomic.Pointer[tls.Certificate]
	bundle atomic.Pointer[x509bundle.Bundle]
}

var _ tlsconf.Mesh = (*mesh)(nil)

func newMesh(cert *tls.Certificate, roots ...*root) *mesh {
	m := &mesh{}
	m.cert.Store(cert)
	m.setRoots(roots...)
	return m
}

func (m *mesh) setRoots(roots ...*root) {
	b := x509bundle.New(roots[0].td)
	for _, r := range roots {
		b.AddX509Authority(r.cert)
	}
	m.bundle.Store(b)
}

func (m *mesh) Certificate() (*tls.Certificate, error) { return m.cert.Load(), nil }
func (m *mesh) TrustBundle() *x509bundle.Bundle        { return m.bundle.Load() }

// handshake is what a mesh listener made of one connection.
type handshake struct {
	info *filter.TLSInfo
	err  error
}

// serveMesh runs a mesh listener that echoes after the handshake.
func serveMesh(t *testing.T, m tlsconf.Mesh) (string, chan handshake) {
	t.Helper()
	srv, err := tlsconf.NewServer(config.ListenerTLS{Mesh: true}, []string{"http/1.1"}, nil, tlsconf.WithMesh(m))
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inner.Close() })
	ln := tlsconf.NewListener(inner, srv)
	out := make(chan handshake, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tlsconf.Conn)
				if err := tc.Handshake(); err != nil {
					out <- handshake{err: err}
					return
				}
				out <- handshake{info: tc.TLSInfo()}
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String(), out
}

// dialMesh connects as a mesh cluster expecting the given identities.
func dialMesh(t *testing.T, addr string, m tlsconf.Mesh, expect ...string) (*tls.Conn, error) {
	t.Helper()
	conf, err := tlsconf.ClientConfig(&config.ClusterTLS{Mesh: true, ExpectedIdentities: expect}, addr, config.ProtocolHTTP1, tlsconf.WithMesh(m))
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		return nil, err
	}
	// With TLS 1.3 the server checks the client's certificate after the
	// client finished: a round trip tells.
	if _, err := c.Write([]byte("x")); err == nil {
		var b [1]byte
		_, err = io.ReadFull(c, b[:])
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

const (
	idA = "spiffe://wasmgate.local/ns/shop/sa/a"
	idB = "spiffe://wasmgate.local/ns/shop/sa/b"
)

func TestMeshMutualTLS(t *testing.T) {
	r := newRoot(t, "wasmgate.local")
	addr, hs := serveMesh(t, newMesh(r.svid(t, "/ns/shop/sa/b"), r))
	c, err := dialMesh(t, addr, newMesh(r.svid(t, "/ns/shop/sa/a"), r), idB)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	h := <-hs
	if h.err != nil {
		t.Fatal(h.err)
	}
	// The peer's SPIFFE ID reaches filters through the connection's facts.
	if !h.info.PeerVerified || len(h.info.PeerURISANs) != 1 || h.info.PeerURISANs[0] != idA {
		t.Fatalf("peer = verified %v, URIs %v; want verified %s", h.info.PeerVerified, h.info.PeerURISANs, idA)
	}
	if len(h.info.LocalURISANs) != 1 || h.info.LocalURISANs[0] != idB {
		t.Fatalf("local URIs = %v, want %s", h.info.LocalURISANs, idB)
	}
	if got := tlsconf.PeerSPIFFEID(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{r.svid(t, "/ns/x/sa/y").Leaf}}); got != "spiffe://wasmgate.local/ns/x/sa/y" {
		t.Fatalf("PeerSPIFFEID = %q", got)
	}
}

func TestMeshRefusals(t *testing.T) {
	r := newRoot(t, "wasmgate.local")
	other := newRoot(t, "other.example")
	old := newRoot(t, "wasmgate.local")
	server := newMesh(r.svid(t, "/ns/shop/sa/b"), r, old)
	addr, hs := serveMesh(t, server)

	t.Run("client without a certificate", func(t *testing.T) {
		conf := &tls.Config{InsecureSkipVerify: true}
		c, err := tls.Dial("tcp", addr, conf)
		if err == nil {
			c.Write([]byte("x"))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Fatal("a client without a certificate was served")
		}
		if h := <-hs; h.err == nil || !strings.Contains(h.err.Error(), "certificate") {
			t.Fatalf("server: %v", h.err)
		}
	})
	t.Run("client of another trust domain", func(t *testing.T) {
		if _, err := dialMesh(t, addr, newMesh(other.svid(t, "/ns/shop/sa/a"), r)); err == nil {
			t.Fatal("served")
		}
		if h := <-hs; h.err == nil || !strings.Contains(h.err.Error(), `not of trust domain "wasmgate.local"`) {
			t.Fatalf("server: %v", h.err)
		}
	})
	t.Run("client signed by a removed root", func(t *testing.T) {
		client := newMesh(old.svid(t, "/ns/shop/sa/a"), r, old)
		c, err := dialMesh(t, addr, client)
		if err != nil {
			t.Fatalf("before the removal: %v", err)
		}
		if h := <-hs; h.err != nil {
			t.Fatal(h.err)
		}
		server.setRoots(r) // the rotation removes the old root
		if _, err := dialMesh(t, addr, client); err == nil {
			t.Fatal("served after the root was removed")
		}
		if h := <-hs; h.err == nil || !strings.Contains(h.err.Error(), "unknown authority") {
			t.Fatalf("server: %v", h.err)
		}
		// The connection made before the removal stays open.
		if _, err := c.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'y' {
			t.Fatalf("the open connection broke: %v", err)
		}
		c.Close()
		server.setRoots(r, old)
	})
	t.Run("server with an unexpected identity", func(t *testing.T) {
		_, err := dialMesh(t, addr, newMesh(r.svid(t, "/ns/shop/sa/a"), r), "spiffe://wasmgate.local/ns/shop/sa/c")
		if err == nil || !strings.Contains(err.Error(), "not an expected identity") {
			t.Fatalf("client: %v", err)
		}
		<-hs
	})
	t.Run("mesh without an identity", func(t *testing.T) {
		if _, err := tlsconf.NewServer(config.ListenerTLS{Mesh: true}, nil, nil); err == nil || !strings.Contains(err.Error(), "no workload identity") {
			t.Fatalf("listener: %v", err)
		}
		if _, err := tlsconf.ClientConfig(&config.ClusterTLS{Mesh: true}, "127.0.0.1:1", config.ProtocolHTTP1); err == nil {
			t.Fatal("cluster without an identity accepted")
		}
	})
}

// TestMeshCertificateSwap renews the server's certificate: new handshakes
// get the new one, and a connection opened before keeps working.
func TestMeshCertificateSwap(t *testing.T) {
	r := newRoot(t, "wasmgate.local")
	first := r.svid(t, "/ns/shop/sa/b")
	server := newMesh(first, r)
	addr, hs := serveMesh(t, server)
	client := newMesh(r.svid(t, "/ns/shop/sa/a"), r)
	c1, err := dialMesh(t, addr, client, idB)
	if err != nil {
		t.Fatal(err)
	}
	<-hs
	second := r.svid(t, "/ns/shop/sa/b")
	server.cert.Store(second)
	c2, err := dialMesh(t, addr, client, idB)
	if err != nil {
		t.Fatal(err)
	}
	<-hs
	if got := c1.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatalf("first connection: serial %v", got)
	}
	if got := c2.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Fatalf("second connection: serial %v, want the renewed %v", got, second.Leaf.SerialNumber)
	}
	for _, c := range []*tls.Conn{c1, c2} {
		if _, err := c.Write([]byte("z")); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkMeshHandshake measures full mTLS handshakes with workload
// certificates (no resumption): handshakes per second is 1e9/ns_op.
func BenchmarkMeshHandshake(b *testing.B) {
	r := newRoot(b, "wasmgate.local")
	srv, err := tlsconf.NewServer(config.ListenerTLS{Mesh: true}, []string{"http/1.1"}, nil, tlsconf.WithMesh(newMesh(r.svid(b, "/ns/shop/sa/b"), r)))
	if err != nil {
		b.Fatal(err)
	}
	conf, err := tlsconf.ClientConfig(&config.ClusterTLS{Mesh: true, ExpectedIdentities: []string{idB}}, "127.0.0.1:1", config.ProtocolHTTP1,
		tlsconf.WithMesh(newMesh(r.svid(b, "/ns/shop/sa/a"), r)))
	if err != nil {
		b.Fatal(err)
	}
	conf.SessionTicketsDisabled = true
	b.ReportAllocs()
	for b.Loop() {
		cc, sc := net.Pipe()
		done := make(chan error, 1)
		go func() {
			s := tls.Server(sc, srv.Config())
			done <- s.Handshake()
		}()
		c := tls.Client(cc, conf)
		if err := c.Handshake(); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		cc.Close()
		sc.Close()
	}
}
