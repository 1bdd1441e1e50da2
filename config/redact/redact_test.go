package redact_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/config/redact"
)

const pemKey = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBn\n-----END EC PRIVATE KEY-----\n"

// keyPair makes a self-signed certificate and its private key, in PEM.
func keyPair(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "site"}, DNSNames: []string{"site.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

func TestConfig(t *testing.T) {
	certPEM, keyPEM := keyPair(t)
	cfg, err := config.Parse([]byte(`
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "127.0.0.1:1"}]}]
certificates: [{name: site, cert_pem: "`+strings.ReplaceAll(certPEM, "\n", `\n`)+`", key_pem: "`+strings.ReplaceAll(keyPEM, "\n", `\n`)+`"}]
plugins:
  - name: jwt
    file: jwt.wasm
    config: {issuer: "https://issuer.example", jwks: {keys: [{kty: oct, k: "c2VjcmV0"}]}, hmac_secret: "s3cr3t", audiences: ["api"]}
    vm_config: "token=abcdef"
  - name: plain
    file: plain.wasm
    config: "deny-all"
virtual_hosts:
  - name: all
    domains: ["*"]
    request_headers:
      set: [{name: Authorization, value: "Bearer upstream-token"}, {name: X-Env, value: prod}]
    filters: [{plugin: jwt, config: {note: "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"}}]
    routes:
      - name: r
        match:
          prefix: /
          headers: [{name: X-Api-Key, exact: "k-123"}, {name: X-Version, exact: "2"}]
        request_headers:
          add: [{name: Cookie, value: "session=abc"}]
        response_headers:
          set: [{name: Set-Cookie, value: "sid=1"}, {name: Cache-Control, value: no-store}]
        cluster: a
      - name: d
        match: {path: /d}
        direct_response: {status: 200, headers: [{name: X-Token, value: t0k3n}]}
`), "redact.yaml")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(cfg)
	out := redact.Config(cfg)
	after, _ := json.Marshal(cfg)
	if string(before) != string(after) {
		t.Fatal("Config changed its argument")
	}
	doc, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	keyBody := strings.Split(keyPEM, "\n")[1]
	for _, secret := range []string{"PRIVATE KEY", keyBody, "c2VjcmV0", "s3cr3t", "abcdef", "upstream-token", "eyJhbGciOiJIUzI1NiJ9", "k-123", "session=abc", "sid=1", "t0k3n"} {
		if strings.Contains(string(doc), secret) {
			t.Errorf("the redacted configuration still holds %q:\n%s", secret, doc)
		}
	}
	for _, kept := range []string{"https://issuer.example", "deny-all", `"prod"`, `"no-store"`, `"exact":"2"`, `"audiences":["api"]`, "BEGIN CERTIFICATE"} {
		if !strings.Contains(string(doc), kept) {
			t.Errorf("the redacted configuration lost %s:\n%s", kept, doc)
		}
	}
}

func TestHeader(t *testing.T) {
	for _, tc := range []struct {
		name, value, want string
	}{
		{"Authorization", "Basic dXNlcjpwYXNz", redact.Marker},
		{"Proxy-Authorization", "anything", redact.Marker},
		{"X-Upstream", "Bearer abc", redact.Marker},
		{"X-Jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", redact.Marker},
		{"X-Forwarded-Proto", "https", "https"},
		{"Authorization", "", ""},
	} {
		if got := redact.Header(tc.name, tc.value); got != tc.want {
			t.Errorf("Header(%q, %q) = %q, want %q", tc.name, tc.value, got, tc.want)
		}
	}
}

func TestResource(t *testing.T) {
	c := &config.Certificate{Name: "c", CertPEM: "CERT", KeyPEM: pemKey}
	r := redact.Resource(c).(*config.Certificate)
	if r.KeyPEM != redact.Marker || c.KeyPEM != pemKey || r.CertPEM != "CERT" {
		t.Errorf("certificate: %+v, original %+v", r, c)
	}
	cl := &config.Cluster{Name: "a"}
	if redact.Resource(cl) != any(cl) {
		t.Error("a cluster, which holds no secret, was copied")
	}
}
