package fleet_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/controlplane/store"
	"github.com/wasmgate/wasmgate/controlplane/watch"
	"github.com/wasmgate/wasmgate/proxy"
)

// selfSigned returns a PEM certificate for example.test whose common name
// is cn, and its PEM private key.
func selfSigned(t *testing.T, cn string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{"example.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
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

func newKey(t *testing.T) *secret.Key {
	t.Helper()
	k, err := secret.ParseKey(secret.NewKeyText())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// tlsConfig is a listener on TLS with the stored certificate "site".
func tlsConfig(certPEM, keyPEM string) *config.Config {
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "main", Address: "127.0.0.1:0",
			TLS: &config.ListenerTLS{Certificates: []config.CertificateFiles{{Certificate: "site"}}}}},
		VirtualHosts: []config.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []config.Route{
			{Name: "ok", DirectResponse: &config.DirectResponse{Status: 200, Body: "ok"}},
		}}},
		Certificates: []config.Certificate{{Name: "site", CertPEM: certPEM, KeyPEM: keyPEM}},
	}
	cfg.Normalize()
	return cfg
}

// servedCN returns the common name of the certificate a TLS client is
// served at addr, after verifying it against roots.
func servedCN(t *testing.T, addr string, roots *x509.CertPool) (string, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: "example.test", RootCAs: roots})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func pool(certPEMs ...string) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certPEMs {
		p.AppendCertsFromPEM([]byte(c))
	}
	return p
}

// TestCertificateThroughTheStore stores a certificate, checks that etcd
// holds its private key only encrypted, that a proxy following the store
// serves it, and that a new certificate applied through the store is
// served by the same listener without a restart.
func TestCertificateThroughTheStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prefix := etcdtest.Prefix(t)
	key := newKey(t)
	st := store.New(etcdtest.Client(t), prefix, store.WithSecretKey(key))

	cert1, key1 := selfSigned(t, "site-v1")
	if _, err := st.Apply(ctx, store.Change{Put: resource.Split(tlsConfig(cert1, key1)), Author: "test"}); err != nil {
		t.Fatal(err)
	}

	ref := resource.Ref{Kind: resource.Certificates, Name: "site"}
	resp, err := etcdtest.Client(t).Get(ctx, st.Keys().Resource(ref))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading the stored certificate: %v", err)
	}
	raw := resp.Kvs[0].Value
	keyBody := strings.Split(key1, "\n")[1]
	if bytes.Contains(raw, []byte("PRIVATE KEY")) || bytes.Contains(raw, []byte(keyBody)) {
		t.Fatalf("etcd holds the private key in clear: %s", raw)
	}
	if !bytes.Contains(raw, []byte(`"key_pem":"enc:v1:`)) {
		t.Fatalf("stored value has no encrypted key: %s", raw)
	}
	// Applying the same certificate again changes nothing.
	res, err := st.Apply(ctx, store.Change{Put: resource.Split(tlsConfig(cert1, key1)), Author: "test"})
	if err != nil || len(res.Ops) != 0 {
		t.Fatalf("re-applying the same certificate: ops %v, err %v", res, err)
	}

	srv := proxy.NewServer(proxy.Options{})
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	w, err := watch.New(watch.Options{
		Client:    etcdtest.Client(t),
		Prefix:    prefix,
		SecretKey: key,
		Apply: func(cfg *config.Config, rev int64) error {
			return srv.Apply(ctx, cfg, strconv.FormatInt(rev, 10))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Addr("main") == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy got no configuration: %+v", w.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	addr := srv.Addr("main").String()

	cert2, key2 := selfSigned(t, "site-v2")
	roots := pool(cert1, cert2)
	if cn, err := servedCN(t, addr, roots); err != nil || cn != "site-v1" {
		t.Fatalf("served %q, %v; want site-v1", cn, err)
	}

	put := resource.Set{ref: &config.Certificate{Name: "site", CertPEM: cert2, KeyPEM: key2}}
	if _, err := st.Apply(ctx, store.Change{Put: put, Author: "test"}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		cn, err := servedCN(t, addr, roots)
		if err == nil && cn == "site-v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still served %q, %v; want site-v2", cn, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := srv.Addr("main").String(); got != addr {
		t.Fatalf("the listener moved from %s to %s: it was restarted", addr, got)
	}
}

// TestCertificateWithoutOrWithAWrongKey checks that a control plane with
// no secret key refuses certificates, and that a proxy with another key
// rejects the stored certificate and keeps its configuration.
func TestCertificateWithoutOrWithAWrongKey(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prefix := etcdtest.Prefix(t)
	cert, key := selfSigned(t, "site")

	_, err := store.New(etcdtest.Client(t), prefix).Apply(ctx, store.Change{Put: resource.Split(tlsConfig(cert, key)), Author: "test"})
	var verr *store.ValidationError
	if !errors.As(err, &verr) || !strings.Contains(err.Error(), "--secret-key-file") {
		t.Fatalf("a store without a key: %v; want a validation error naming --secret-key-file", err)
	}

	st := store.New(etcdtest.Client(t), prefix, store.WithSecretKey(newKey(t)))
	if _, err := st.Apply(ctx, store.Change{Put: resource.Split(tlsConfig(cert, key)), Author: "test"}); err != nil {
		t.Fatal(err)
	}

	applied := make(chan struct{}, 16)
	core, logs := observer.New(zap.ErrorLevel)
	w, err := watch.New(watch.Options{
		Client:    etcdtest.Client(t),
		Prefix:    prefix,
		SecretKey: newKey(t),
		Logger:    zap.New(core),
		Apply: func(*config.Config, int64) error {
			applied <- struct{}{}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	decryptLogged := func() bool {
		for _, e := range logs.All() {
			if err, ok := e.ContextMap()["error"].(string); ok && strings.Contains(err, "cannot decrypt") {
				return true
			}
		}
		return false
	}
	for !decryptLogged() || w.Status().LastError == "" {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v, logs %v; want a logged reason saying the key cannot be decrypted", w.Status(), logs.All())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if w.Status().Ready() {
		t.Fatal("the watcher reports a configuration applied")
	}
	select {
	case <-applied:
		t.Fatal("a configuration naming an undecryptable certificate was applied")
	default:
	}
}
