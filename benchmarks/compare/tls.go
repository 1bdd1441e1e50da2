package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certFiles are the PEM files of the self-signed certificate every TLS
// scenario serves.
type certFiles struct {
	Cert    string // the certificate
	Key     string // its private key (PKCS #8)
	CertKey string // both in one file, as HAProxy's crt takes them
}

// writeSelfSigned writes an ECDSA P-256 certificate for 127.0.0.1 and
// localhost, valid for a day, into dir. Every peer gets the same key type,
// so that handshakes cost each the same.
func writeSelfSigned(dir string) (certFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return certFiles{}, fmt.Errorf("generating the key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return certFiles{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"wasmgate benchmarks"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return certFiles{}, fmt.Errorf("creating the certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return certFiles{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	f := certFiles{
		Cert:    filepath.Join(dir, "cert.pem"),
		Key:     filepath.Join(dir, "key.pem"),
		CertKey: filepath.Join(dir, "cert-key.pem"),
	}
	// Readable by all: nginx's worker may run as another user. The key
	// protects nothing but this run's loopback traffic.
	for path, b := range map[string][]byte{f.Cert: certPEM, f.Key: keyPEM, f.CertKey: append(append([]byte{}, certPEM...), keyPEM...)} {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return certFiles{}, err
		}
	}
	return f, nil
}

// mutualFiles are the PEM files of the nginx pair's mutual TLS: a CA, the
// inbound's server certificate (for the name mutualServerName) and the
// outbound's client certificate, each with its key.
type mutualFiles struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	ServerName            string
}

// mutualServerName is the name the nginx pair's outbound verifies.
const mutualServerName = "inbound.pair"

// writeMutualTLS writes a CA and two ECDSA P-256 certificates it signs,
// valid for a day, into dir: P-256 and TLS 1.3, as the sidecars use.
func writeMutualTLS(dir string) (mutualFiles, error) {
	now := time.Now()
	newKey := func() (*ecdsa.PrivateKey, *big.Int, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
		return key, serial, err
	}
	caKey, serial, err := newKey()
	if err != nil {
		return mutualFiles{}, err
	}
	ca := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "wasmgate benchmarks pair CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return mutualFiles{}, err
	}
	f := mutualFiles{CA: filepath.Join(dir, "pair-ca.pem"), ServerName: mutualServerName}
	files := map[string][]byte{f.CA: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	for _, leaf := range []struct {
		name      string
		usage     x509.ExtKeyUsage
		cert, key *string
	}{
		{mutualServerName, x509.ExtKeyUsageServerAuth, &f.ServerCert, &f.ServerKey},
		{"outbound.pair", x509.ExtKeyUsageClientAuth, &f.ClientCert, &f.ClientKey},
	} {
		key, serial, err := newKey()
		if err != nil {
			return mutualFiles{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial, Subject: pkix.Name{CommonName: leaf.name}, DNSNames: []string{leaf.name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{leaf.usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return mutualFiles{}, err
		}
		pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return mutualFiles{}, err
		}
		*leaf.cert, *leaf.key = filepath.Join(dir, leaf.name+".pem"), filepath.Join(dir, leaf.name+".key")
		files[*leaf.cert] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		files[*leaf.key] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	}
	// Readable by all, as writeSelfSigned's: nginx's worker may run as
	// another user.
	for path, b := range files {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return mutualFiles{}, err
		}
	}
	return f, nil
}
