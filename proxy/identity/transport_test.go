package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestCertTransport: requests to the control plane share kept-alive
// connections that present the current certificate; after a renewal they
// present the new one, on new connections.
func TestCertTransport(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			io.WriteString(w, "none")
			return
		}
		io.WriteString(w, r.TLS.PeerCertificates[0].SerialNumber.String())
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()

	a := &Agent{}
	c := &http.Client{Transport: &certTransport{a: a, tls: &tls.Config{InsecureSkipVerify: true}}}
	get := func() string {
		t.Helper()
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(); got != "none" {
		t.Fatalf("before any certificate the client presented %q", got)
	}
	for i, serial := range []int64{7, 8} {
		a.svid.Store(&svid{cert: selfSigned(t, serial)})
		for range 5 {
			if got, want := get(), big.NewInt(serial).String(); got != want {
				t.Fatalf("certificate %d: the server saw serial %s, want %s", i+1, got, want)
			}
		}
		// One connection for no certificate, and one per certificate:
		// the five requests with each share theirs.
		if n := conns.Load(); n != int64(i+2) {
			t.Fatalf("after certificate %d: %d connections, want %d", i+1, n, i+2)
		}
	}
}

func selfSigned(t *testing.T, serial int64) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
