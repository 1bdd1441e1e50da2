package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/controlplane/store"
)

// TestCertificateReadsAreRedacted stores a certificate and reads it back
// every way the API offers: the private key never comes out, and a value
// read back and put again keeps the stored key.
func TestCertificateReadsAreRedacted(t *testing.T) {
	ctx := context.Background()
	key, err := secret.ParseKey(secret.NewKeyText())
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(etcdtest.Client(t), etcdtest.Prefix(t), store.WithSecretKey(key))
	srv := httptest.NewServer(api.NewHandler(st, []api.Token{{Name: "alice", Role: api.RoleAdmin, Secret: adminSecret}}, nil))
	t.Cleanup(srv.Close)

	pk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "site"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &pk.PublicKey, pk)
	kder, _ := x509.MarshalPKCS8PrivateKey(pk)
	cert := config.Certificate{Name: "site",
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))}
	ref := resource.Ref{Kind: resource.Certificates, Name: "site"}
	main := resource.Ref{Kind: resource.Listeners, Name: "main"}
	ln := config.Listener{Name: "main", Address: "127.0.0.1:8443", TLS: &config.ListenerTLS{Certificates: []config.CertificateFiles{{Certificate: "site"}}}}
	if _, err := st.Apply(ctx, store.Change{Put: resource.Set{ref: &cert, main: &ln}}); err != nil {
		t.Fatal(err)
	}

	get := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+adminSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	for _, path := range []string{"/v1/certificates/site", "/v1/certificates", "/v1/config"} {
		body := get(path)
		if strings.Contains(body, "PRIVATE KEY") || strings.Contains(body, "enc:v1:") {
			t.Errorf("GET %s returns the private key: %s", path, body)
		}
		if !strings.Contains(body, secret.Redacted) || !strings.Contains(body, "BEGIN CERTIFICATE") {
			t.Errorf("GET %s: want the certificate with a redacted key: %s", path, body)
		}
	}

	redacted := cert
	redacted.KeyPEM = secret.Redacted
	res, err := st.Apply(ctx, store.Change{Put: resource.Set{ref: &redacted}})
	if err != nil || len(res.Ops) != 0 {
		t.Fatalf("putting back a redacted value: %+v, %v; want no change", res, err)
	}
}
