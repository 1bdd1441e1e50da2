package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ControlPlaneID is the SPIFFE ID in the control plane's own certificate.
func (c *CA) ControlPlaneID() spiffeid.ID {
	id, _ := spiffeid.FromSegments(c.td, "ns", "wasmgate-system", "sa", "controlplane")
	return id
}

// ServingCertificates returns a GetCertificate function for the control
// plane's API: a certificate for hosts (names and IP addresses) and the
// control plane's SPIFFE ID, issued by the CA and made anew when half its
// life has passed or when another authority signs. While etcd cannot be
// read, handshakes get the certificate held until it expires.
func (c *CA) ServingCertificates(hosts []string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	var (
		mu      sync.Mutex
		cur     *tls.Certificate
		signer  string
		renewAt time.Time
	)
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		// The CA is read on every handshake (one etcd read: proxies
		// connect once per renewal or bundle poll), so that the
		// certificate follows a rotation step at once.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ls, err := c.load(ctx)
		if err != nil {
			if cur != nil && now.Before(cur.Leaf.NotAfter) {
				return cur, nil // etcd away: keep serving what we hold
			}
			return nil, err
		}
		if cur != nil && now.Before(renewAt) && signer == ls.signer.id {
			return cur, nil
		}
		next, err := c.issueServing(ls, hosts)
		if err != nil {
			if cur != nil {
				return cur, nil
			}
			return nil, err
		}
		cur, signer = next, ls.signer.id
		renewAt = now.Add(next.Leaf.NotAfter.Sub(now) / 2)
		return cur, nil
	}
}

func (c *CA) issueServing(ls *loadedState, hosts []string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(c.life)
	if notAfter.After(ls.signer.cert.NotAfter) {
		notAfter = ls.signer.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{"wasmgate"}, CommonName: "wasmgate control plane"},
		URIs:                  []*url.URL{c.ControlPlaneID().URL()},
		NotBefore:             now.Add(-backdateFor(c.life)),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ls.signer.cert, key.Public(), ls.signer.key)
	if err != nil {
		return nil, fmt.Errorf("ca: signing the control plane's certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	chain := append([][]byte{der}, ls.signer.chain...)
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}
