package controlplane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/ca"
	"github.com/wasmgate/wasmgate/controlplane/secret"
)

const (
	meshAdmin = "mesh-admin-secret-0123456789"
	meshRead  = "mesh-read-secret-0123456789"
)

func startMesh(t *testing.T) *controlplane.Server {
	t.Helper()
	key, err := secret.ParseKey(secret.NewKeyText())
	if err != nil {
		t.Fatal(err)
	}
	s, err := controlplane.Start(context.Background(), controlplane.Options{
		DataDir: t.TempDir(), EtcdClientAddr: "127.0.0.1:0", EtcdPeerAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
		Logger: zap.NewNop(), SecretKey: key, Mesh: true,
		Tokens: []api.Token{{Name: "ops", Role: api.RoleAdmin, Secret: meshAdmin}, {Name: "viewer", Role: api.RoleRead, Secret: meshRead}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// meshClient trusts the bundle file and presents cert, if any.
func meshClient(t *testing.T, s *controlplane.Server, token string, cert *tls.Certificate) *api.Client {
	t.Helper()
	roots, err := os.ReadFile(s.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		t.Fatal("the bundle file holds no root")
	}
	conf := &tls.Config{RootCAs: pool}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	return &api.Client{Server: s.APIURL(), Token: token, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true}}}
}

func newCSR(t *testing.T, key *ecdsa.PrivateKey) string {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func apiStatus(err error) (int, string) {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Status, ae.Body.Code
	}
	return 0, ""
}

// TestMeshAPI drives the identity endpoints over the API's TLS, which
// the CA's own certificate serves.
func TestMeshAPI(t *testing.T) {
	ctx := context.Background()
	s := startMesh(t)
	if !strings.HasPrefix(s.APIURL(), "https://") {
		t.Fatalf("the mesh API is served at %s, want https", s.APIURL())
	}
	admin := meshClient(t, s, meshAdmin, nil)
	viewer := meshClient(t, s, meshRead, nil)

	// Tokens need the admin role; reading them the read role.
	if _, err := viewer.CreateToken(ctx, api.TokenRequest{Namespace: "shop", ServiceAccount: "orders"}); err == nil {
		t.Fatal("a read token made a join token")
	} else if st, _ := apiStatus(err); st != http.StatusForbidden {
		t.Fatalf("read role: %v", err)
	}
	if _, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: "Shop!", ServiceAccount: "orders"}); err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Fatalf("a bad namespace: %v", err)
	}
	tc, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: "shop", ServiceAccount: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := viewer.Tokens(ctx)
	if err != nil || len(list) != 1 || list[0].Used != 0 {
		t.Fatalf("tokens = %+v, %v", list, err)
	}

	// The first certificate, with the token; signing needs no bearer token.
	anon := meshClient(t, s, "", nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := anon.Sign(ctx, api.SignRequest{CSR: newCSR(t, key), JoinToken: tc.Token, Proxy: "orders-1"})
	if err != nil {
		t.Fatal(err)
	}
	if iss.ID != "spiffe://wasmgate.local/ns/shop/sa/orders" {
		t.Fatalf("issued %s", iss.ID)
	}
	// Reused: refused with the field and reason, nothing issued.
	_, err = anon.Sign(ctx, api.SignRequest{CSR: newCSR(t, key), JoinToken: tc.Token, Proxy: "orders-2"})
	if st, code := apiStatus(err); st != http.StatusForbidden || code != "refused" || !strings.Contains(err.Error(), "join_token: token") || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("a reused token: %v", err)
	}

	// A renewal over mTLS with the certificate just issued.
	block, _ := pem.Decode([]byte(iss.CertPEM))
	kder, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair([]byte(iss.CertPEM), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	if err != nil || block == nil {
		t.Fatal(err)
	}
	proxyClient := meshClient(t, s, "", &pair)
	key2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss2, err := proxyClient.Sign(ctx, api.SignRequest{CSR: newCSR(t, key2), Proxy: "orders-1"})
	if err != nil {
		t.Fatal(err)
	}
	if iss2.ID != iss.ID || iss2.Serial == iss.Serial {
		t.Fatalf("renewal = %s %s", iss2.ID, iss2.Serial)
	}
	// Without a certificate or token: refused.
	if _, err := anon.Sign(ctx, api.SignRequest{CSR: newCSR(t, key2)}); err == nil {
		t.Fatal("an anonymous CSR was signed")
	}

	// Status shows the proxy's certificate; step 2 of a rotation waits
	// until the proxy has fetched the new bundle.
	st, err := viewer.CAStatus(ctx)
	if err != nil || len(st.Proxies) != 1 || st.Proxies[0].Serial != iss2.Serial {
		t.Fatalf("status = %+v, %v", st, err)
	}
	if _, err := viewer.Rotate(ctx, false); err == nil {
		t.Fatal("a read token rotated the root")
	}
	// A long poll returns the new bundle as soon as the rotation's first
	// step lands.
	got := make(chan error, 1)
	go func() {
		b, err := proxyClient.Bundle(ctx, st.BundleRevision, 30*time.Second, "orders-1")
		if err == nil && !strings.Contains(b.Phase, ca.PhaseAdded) {
			err = errors.New("phase " + b.Phase)
		}
		got <- err
	}()
	st, err = admin.Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("long poll: %v", err)
	}
	_, err = admin.Rotate(ctx, false)
	if code, body := apiStatus(err); code != http.StatusConflict || body != "pending" || !strings.Contains(err.Error(), "orders-1") {
		t.Fatalf("step 2 before the proxy caught up: %v", err)
	}
	// The proxy's next poll records the bundle it holds.
	if _, err := proxyClient.Bundle(ctx, st.BundleRevision, 0, "orders-1"); err != nil {
		t.Fatal(err)
	}
	if st, err = admin.Rotate(ctx, false); err != nil || st.Phase != ca.PhaseActivated {
		t.Fatalf("step 2: %+v %v", st.Phase, err)
	}
	roots, _ := os.ReadFile(s.BundlePath())
	if n := strings.Count(string(roots), "BEGIN CERTIFICATE"); n != 2 {
		// The file follows the bundle; wait for the watcher's write.
		deadline := time.Now().Add(10 * time.Second)
		for n != 2 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			roots, _ = os.ReadFile(s.BundlePath())
			n = strings.Count(string(roots), "BEGIN CERTIFICATE")
		}
		if n != 2 {
			t.Fatalf("the bundle file holds %d roots, want 2", n)
		}
	}

	// The API now serves a certificate of the new root: clients read the
	// bundle file again, as the CLI does on every call.
	admin = meshClient(t, s, meshAdmin, nil)

	// Revoking: unknown is 404, a known token is gone.
	tc2, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: "shop", ServiceAccount: "pay", TTL: 0, Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeToken(ctx, tc2.Token); err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeToken(ctx, tc2.Info.ID); err == nil {
		t.Fatal("revoked twice")
	} else if st, _ := apiStatus(err); st != http.StatusNotFound {
		t.Fatalf("second revoke: %v", err)
	}

	// No answer of the API carries a private key, sealed or not.
	for _, path := range []string{"/v1/identity/status", "/v1/identity/tokens", "/v1/identity/bundle", "/v1/config", "/v1/status"} {
		req, _ := http.NewRequest(http.MethodGet, s.APIURL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+meshAdmin)
		resp, err := admin.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Contains(string(body), "PRIVATE KEY") || strings.Contains(string(body), secret.Prefix) {
			t.Fatalf("%s: %d %.300s", path, resp.StatusCode, body)
		}
	}
}

// TestMeshNeedsSecretKey refuses a CA whose key could not be sealed.
func TestMeshNeedsSecretKey(t *testing.T) {
	_, err := controlplane.Start(context.Background(), controlplane.Options{DataDir: t.TempDir(), EtcdClientAddr: "127.0.0.1:0",
		EtcdPeerAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Mesh: true, Logger: zap.NewNop()})
	if err == nil || !strings.Contains(err.Error(), "secret key") {
		t.Fatalf("mesh without a secret key: %v", err)
	}
}
