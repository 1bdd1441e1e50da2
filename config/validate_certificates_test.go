package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func testKeyPair(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "a"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

func TestValidateCertificates(t *testing.T) {
	certPEM, keyPEM := testKeyPair(t)
	_, otherKey := testKeyPair(t)
	tests := []struct {
		name  string
		certs []Certificate
		entry CertificateFiles
		want  []string
	}{
		{name: "named", certs: []Certificate{{Name: "site", CertPEM: certPEM, KeyPEM: keyPEM}},
			entry: CertificateFiles{Certificate: "site"}},
		{name: "unknown name", entry: CertificateFiles{Certificate: "site"},
			want: []string{`listeners[0].tls.certificates[0].certificate: unknown certificate "site"`}},
		{name: "both forms", certs: []Certificate{{Name: "site", CertPEM: certPEM, KeyPEM: keyPEM}},
			entry: CertificateFiles{Certificate: "site", CertFile: "a.crt", KeyFile: "a.key"},
			want:  []string{"listeners[0].tls.certificates[0]: either certificate or cert_file and key_file, not both"}},
		{name: "not a key pair", certs: []Certificate{{Name: "site", CertPEM: certPEM, KeyPEM: otherKey}},
			entry: CertificateFiles{Certificate: "site"},
			want:  []string{"certificates[0]: cert_pem and key_pem are not a key pair"}},
		{name: "not PEM", certs: []Certificate{{Name: "site", CertPEM: "x", KeyPEM: "y"}},
			entry: CertificateFiles{Certificate: "site"},
			want:  []string{"certificates[0]: cert_pem and key_pem are not a key pair"}},
		{name: "missing key", certs: []Certificate{{Name: "site", CertPEM: certPEM}},
			entry: CertificateFiles{Certificate: "site"},
			want:  []string{"certificates[0].key_pem: is required"}},
		{name: "duplicate", certs: []Certificate{{Name: "site", CertPEM: certPEM, KeyPEM: keyPEM}, {Name: "site", CertPEM: certPEM, KeyPEM: keyPEM}},
			entry: CertificateFiles{Certificate: "site"},
			want:  []string{`certificates[1].name: duplicate certificate name "site"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Config{
				Listeners:    []Listener{{Name: "main", Address: "127.0.0.1:8443", TLS: &ListenerTLS{Certificates: []CertificateFiles{tt.entry}}}},
				Certificates: tt.certs,
			}
			c.Normalize()
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
