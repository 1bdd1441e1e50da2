package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/secret"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

func testKey(t testing.TB) *secret.Key {
	t.Helper()
	k, err := secret.ParseKey(secret.NewKeyText())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newCA opens a CA under a prefix of the test's own.
func newCA(t testing.TB, o Options) (*CA, *clientv3.Client) {
	t.Helper()
	cli := etcdtest.Client(t)
	if o.Prefix == "" {
		o.Prefix = etcdtest.Prefix(t)
	}
	if o.SecretKey == nil {
		o.SecretKey = testKey(t)
	}
	c, err := New(context.Background(), cli, o)
	if err != nil {
		t.Fatal(err)
	}
	return c, cli
}

// csrFor makes a key and a CSR for the given URI SANs.
func csrFor(t testing.TB, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func token(t testing.TB, c *CA, ns, sa string, uses int) string {
	t.Helper()
	tok, _, err := c.CreateToken(context.Background(), ns, sa, time.Hour, uses, "test")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func parseChain(t testing.TB, p string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(p)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func pool(t testing.TB, p string) *x509.CertPool {
	cp := x509.NewCertPool()
	if !cp.AppendCertsFromPEM([]byte(p)) {
		t.Fatal("no roots")
	}
	return cp
}

// checkSVID applies the X.509-SVID rules with Go's verifier.
func checkSVID(t *testing.T, iss *Issued, wantID string) []*x509.Certificate {
	t.Helper()
	chain := parseChain(t, iss.CertPEM)
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
		t.Fatalf("URI SANs = %v, want exactly [%s]", leaf.URIs, wantID)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Fatalf("leaf: IsCA=%v BasicConstraintsValid=%v, want a valid CA:FALSE", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Fatalf("key usage = %b, want digitalSignature only", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("extended key usage = %v, want serverAuth and clientAuth", leaf.ExtKeyUsage)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Fatal("leaf carries names other than its SPIFFE ID")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, ku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(t, iss.Bundle.RootsPEM), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{ku}}); err != nil {
			t.Fatalf("x509 verify (%v): %v", ku, err)
		}
	}
	id, _, err := x509svid.Verify(chain, mustBundle(t, iss.Bundle))
	if err != nil || id.String() != wantID {
		t.Fatalf("x509svid.Verify = %v, %v", id, err)
	}
	return chain
}

func mustBundle(t testing.TB, b Bundle) *x509bundle.Bundle {
	t.Helper()
	bs, err := ParseBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// opensslVerify runs Debian's openssl against the bundle.
func opensslVerify(t *testing.T, iss *Issued) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed (apt-get install openssl)")
	}
	dir := t.TempDir()
	chain := parseChain(t, iss.CertPEM)
	write := func(name string, certs ...*x509.Certificate) string {
		var b []byte
		for _, c := range certs {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	roots := filepath.Join(dir, "bundle.pem")
	os.WriteFile(roots, []byte(iss.Bundle.RootsPEM), 0o600)
	args := []string{"verify", "-x509_strict", "-CAfile", roots}
	if len(chain) > 1 {
		args = append(args, "-untrusted", write("inter.pem", chain[1:]...))
	}
	for _, purpose := range []string{"sslclient", "sslserver"} {
		a := append(append([]string{}, args...), "-purpose", purpose, write("leaf.pem", chain[0]))
		out, err := exec.Command(bin, a...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(a, " "), err, out)
		}
	}
}

func TestIssueFollowsSPIFFERules(t *testing.T) {
	c, _ := newCA(t, Options{})
	tok := token(t, c, "shop", "orders", 1)
	iss, err := c.Sign(context.Background(), SignRequest{CSR: csrFor(t, p256(t), "spiffe://wasmgate.local/ns/shop/sa/orders"), JoinToken: tok, Proxy: "orders-1"})
	if err != nil {
		t.Fatal(err)
	}
	chain := checkSVID(t, iss, "spiffe://wasmgate.local/ns/shop/sa/orders")
	if life := chain[0].NotAfter.Sub(chain[0].NotBefore); life < DefaultLifetime || life > DefaultLifetime+2*backdate {
		t.Fatalf("lifetime = %s, want %s", life, DefaultLifetime)
	}
	opensslVerify(t, iss)

	// A CSR without a URI SAN gets the token's identity; the renewal with
	// the certificate just issued keeps it.
	key := p256(t)
	iss2, err := c.Sign(context.Background(), SignRequest{CSR: csrFor(t, key), JoinToken: token(t, c, "shop", "pay", 1), Proxy: "pay-1"})
	if err != nil {
		t.Fatal(err)
	}
	chain2 := checkSVID(t, iss2, "spiffe://wasmgate.local/ns/shop/sa/pay")
	iss3, err := c.Sign(context.Background(), SignRequest{CSR: csrFor(t, key), Peer: chain2, Proxy: "pay-1"})
	if err != nil {
		t.Fatal(err)
	}
	checkSVID(t, iss3, "spiffe://wasmgate.local/ns/shop/sa/pay")

	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Proxies) != 2 || st.Proxies[1].Serial != iss3.Serial || st.Proxies[1].ID != iss3.ID {
		t.Fatalf("status proxies = %+v", st.Proxies)
	}
}

func TestKeyIsSealedInEtcd(t *testing.T) {
	prefix := etcdtest.Prefix(t)
	_, cli := newCA(t, Options{Prefix: prefix})
	resp, err := cli.Get(context.Background(), prefix+"/identity/ca")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(err)
	}
	raw := string(resp.Kvs[0].Value)
	if strings.Contains(raw, "PRIVATE KEY") || !strings.Contains(raw, secret.Prefix) {
		t.Fatalf("the CA key is not sealed in etcd: %.200s", raw)
	}
	// Another secret key cannot open it.
	if _, err := New(context.Background(), cli, Options{Prefix: prefix, SecretKey: testKey(t)}); !errors.Is(err, secret.ErrWrongKey) {
		t.Fatalf("opening with another key: %v", err)
	}
}

func TestShortLifetimes(t *testing.T) {
	if _, err := New(context.Background(), etcdtest.Client(t), Options{Prefix: etcdtest.Prefix(t), SecretKey: testKey(t), Lifetime: time.Minute}); err == nil || !strings.Contains(err.Error(), "below the minimum") {
		t.Fatalf("a 1m lifetime: %v", err)
	}
	c, _ := newCA(t, Options{Lifetime: MinLifetime})
	iss, err := c.Sign(context.Background(), SignRequest{CSR: csrFor(t, p256(t)), JoinToken: token(t, c, "a", "b", 1)})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(iss.NotAfter); d > MinLifetime || d < MinLifetime-time.Minute {
		t.Fatalf("expires in %s, want about %s", d, MinLifetime)
	}
}

// badCSR makes a CSR whose request carries a basic constraints CA:TRUE
// extension.
func caCSR(t *testing.T, key crypto.Signer, uri string) []byte {
	val, _ := asn1.Marshal(struct{ IsCA bool }{true})
	u, _ := url.Parse(uri)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u},
		ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Critical: true, Value: val}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestBadRequestsAreRefused(t *testing.T) {
	ctx := context.Background()
	c, cli := newCA(t, Options{})
	const id = "spiffe://wasmgate.local/ns/shop/sa/orders"

	used := token(t, c, "shop", "orders", 1)
	if _, err := c.Sign(ctx, SignRequest{CSR: csrFor(t, p256(t), id), JoinToken: used, Proxy: "first"}); err != nil {
		t.Fatal(err)
	}
	expired := token(t, c, "shop", "orders", 1)
	expireToken(t, c, cli, expired)
	revoked := token(t, c, "shop", "orders", 1)
	if err := c.RevokeToken(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)

	other, _ := newCA(t, Options{TrustDomain: "other.example"})
	otherIss, err := other.Sign(ctx, SignRequest{CSR: csrFor(t, p256(t)), JoinToken: token(t, other, "shop", "orders", 1)})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		req   SignRequest
		field string
		want  string
	}{
		{"reused token", SignRequest{CSR: csrFor(t, p256(t), id), JoinToken: used}, "join_token", "already used"},
		{"expired token", SignRequest{CSR: csrFor(t, p256(t), id), JoinToken: expired}, "join_token", "expired"},
		{"revoked token", SignRequest{CSR: csrFor(t, p256(t), id), JoinToken: revoked}, "join_token", "unknown or revoked"},
		{"wrong secret", SignRequest{CSR: csrFor(t, p256(t), id), JoinToken: used[:len(used)-4] + "0000"}, "join_token", "wrong secret"},
		{"another identity", SignRequest{CSR: csrFor(t, p256(t), "spiffe://wasmgate.local/ns/shop/sa/payments"), JoinToken: token(t, c, "shop", "orders", 1)}, "csr", "may only ask for " + id},
		{"another trust domain in the CSR", SignRequest{CSR: csrFor(t, p256(t), "spiffe://evil.example/ns/shop/sa/orders"), JoinToken: token(t, c, "shop", "orders", 1)}, "csr", "may only ask for"},
		{"two URI SANs", SignRequest{CSR: csrFor(t, p256(t), id, id+"x"), JoinToken: token(t, c, "shop", "orders", 1)}, "csr", "exactly one"},
		{"CA bit", SignRequest{CSR: caCSR(t, p256(t), id), JoinToken: token(t, c, "shop", "orders", 1)}, "csr", "CA certificate"},
		{"RSA 1024", SignRequest{CSR: csrFor(t, rsa1024, id), JoinToken: token(t, c, "shop", "orders", 1)}, "csr", "1024 bits"},
		{"P-224", SignRequest{CSR: csrFor(t, p224, id), JoinToken: token(t, c, "shop", "orders", 1)}, "csr", "P-224"},
		{"garbage CSR", SignRequest{CSR: []byte("hello"), JoinToken: token(t, c, "shop", "orders", 1)}, "csr", "not a certificate request"},
		{"no credential", SignRequest{CSR: csrFor(t, p256(t), id)}, "join_token", "is required"},
		{"client cert from another trust domain", SignRequest{CSR: csrFor(t, p256(t)), Peer: parseChain(t, otherIss.CertPEM)}, "peer", `trust domain "other.example"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := countProxies(t, c)
			_, err := c.Sign(ctx, tc.req)
			var re *RefusedError
			if !errors.As(err, &re) || re.Field != tc.field || !strings.Contains(re.Reason, tc.want) {
				t.Fatalf("err = %v, want a refusal of %s saying %q", err, tc.field, tc.want)
			}
			if after := countProxies(t, c); after != before {
				t.Fatalf("a certificate was recorded: %d -> %d", before, after)
			}
		})
	}
	// A refused request does not use the token up.
	tok := token(t, c, "shop", "orders", 1)
	if _, err := c.Sign(ctx, SignRequest{CSR: csrFor(t, p224, id), JoinToken: tok}); err == nil {
		t.Fatal("P-224 accepted")
	}
	if _, err := c.Sign(ctx, SignRequest{CSR: csrFor(t, p256(t), id), JoinToken: tok}); err != nil {
		t.Fatalf("the token was used up by a refused request: %v", err)
	}
}

func countProxies(t *testing.T, c *CA) int {
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(st.Proxies)
}

// expireToken moves a token's expiry into the past in etcd.
func expireToken(t *testing.T, c *CA, cli *clientv3.Client, tok string) {
	t.Helper()
	key := c.keys.token(TokenID(tok))
	resp, err := cli.Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(err)
	}
	var st storedToken
	json.Unmarshal(resp.Kvs[0].Value, &st)
	st.ExpiresAt = time.Now().Add(-time.Second)
	b, _ := json.Marshal(st)
	if _, err := cli.Put(context.Background(), key, string(b), clientv3.WithIgnoreLease()); err != nil {
		t.Fatal(err)
	}
}

func TestTokenUsesAreCountedOnceUnderRace(t *testing.T) {
	c, _ := newCA(t, Options{})
	tok := token(t, c, "a", "b", 3)
	errs := make(chan error, 10)
	for range 10 {
		go func() {
			_, err := c.Sign(context.Background(), SignRequest{CSR: csrFor(t, p256(t)), JoinToken: tok})
			errs <- err
		}()
	}
	ok := 0
	for range 10 {
		if err := <-errs; err == nil {
			ok++
		} else if !strings.Contains(err.Error(), "already used") {
			t.Fatal(err)
		}
	}
	if ok != 3 {
		t.Fatalf("%d certificates from a 3-use token", ok)
	}
}

func TestRotation(t *testing.T) {
	ctx := context.Background()
	c, _ := newCA(t, Options{})
	key := p256(t)
	iss, err := c.Sign(ctx, SignRequest{CSR: csrFor(t, key), JoinToken: token(t, c, "a", "b", 1), Proxy: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	oldChain := parseChain(t, iss.CertPEM)
	oldSigner := iss.Bundle.Signer

	st, err := c.Rotate(ctx, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != PhaseAdded || len(st.Authorities) != 2 || st.Signer != oldSigner {
		t.Fatalf("after step 1: %+v", st)
	}
	// p1 has not fetched the new bundle: the next step waits for it.
	var pe *PendingError
	if _, err := c.Rotate(ctx, false, nil); !errors.As(err, &pe) || pe.Proxies[0] != "p1" {
		t.Fatalf("step 2 with p1 behind: %v", err)
	}
	other, _ := c.ID("a", "other")
	var re *RefusedError
	if err := c.Acknowledge(ctx, "p1", other, st.BundleRevision); !errors.As(err, &re) {
		t.Fatalf("another identity acknowledged for p1: %v", err)
	}
	if err := c.Acknowledge(ctx, "p1", mustID(t, "spiffe://wasmgate.local/ns/a/sa/b"), st.BundleRevision); err != nil {
		t.Fatal(err)
	}
	st, err = c.Rotate(ctx, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != PhaseActivated || st.Signer == oldSigner {
		t.Fatalf("after step 2: %+v", st)
	}
	if _, err := c.Rotate(ctx, false, nil); !errors.As(err, &pe) {
		t.Fatalf("step 3 with p1 on the old root: %v", err)
	}
	// p1 renews with its old certificate, still trusted, and gets one
	// from the new root.
	iss2, err := c.Sign(ctx, SignRequest{CSR: csrFor(t, key), Peer: oldChain, Proxy: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	if iss2.Bundle.Signer != st.Signer {
		t.Fatalf("renewed by %s, want %s", iss2.Bundle.Signer, st.Signer)
	}
	st, err = c.Rotate(ctx, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != PhaseStable || len(st.Authorities) != 1 {
		t.Fatalf("after step 3: %+v", st)
	}
	checkSVID(t, iss2, "spiffe://wasmgate.local/ns/a/sa/b")
	// The old certificate's root is gone: a renewal with it is refused.
	_, err = c.Sign(ctx, SignRequest{CSR: csrFor(t, key), Peer: oldChain, Proxy: "p1"})
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "not signed by a root of the current trust bundle") {
		t.Fatalf("renewal with a certificate of a removed root: %v", err)
	}
	b, _ := c.Bundle(ctx)
	if _, err := oldChain[0].Verify(x509.VerifyOptions{Roots: pool(t, b.RootsPEM)}); err == nil {
		t.Fatal("the old certificate still verifies against the bundle")
	}
}

// operatorPKI makes a company root and an intermediate under it.
func operatorPKI(t *testing.T) (rootPEM []byte, inter *Authority) {
	rk := p256(t)
	rt := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Example Corp Root"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rder, err := x509.CreateCertificate(rand.Reader, rt, rt, rk.Public(), rk)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rder)
	ik := p256(t)
	it := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Example Corp Mesh"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ider, err := x509.CreateCertificate(rand.Reader, it, root, ik.Public(), rk)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(ik)
	rootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rder})
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ider}), rootPEM...)
	return rootPEM, &Authority{CertPEM: chain, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}
}

func TestOperatorIntermediate(t *testing.T) {
	rootPEM, inter := operatorPKI(t)
	c, _ := newCA(t, Options{Authority: inter})
	iss, err := c.Sign(context.Background(), SignRequest{CSR: csrFor(t, p256(t)), JoinToken: token(t, c, "a", "b", 1)})
	if err != nil {
		t.Fatal(err)
	}
	if iss.Bundle.RootsPEM != string(rootPEM) {
		t.Fatal("the bundle is not the operator's root")
	}
	chain := checkSVID(t, iss, "spiffe://wasmgate.local/ns/a/sa/b")
	if len(chain) != 2 || chain[1].Subject.CommonName != "Example Corp Mesh" {
		t.Fatalf("chain = %d certificates, want the leaf and the intermediate", len(chain))
	}
	opensslVerify(t, iss)

	// A key that does not match, or a leaf, is refused.
	_, other := operatorPKI(t)
	bad := &Authority{CertPEM: inter.CertPEM, KeyPEM: other.KeyPEM}
	if _, err := New(context.Background(), etcdtest.Client(t), Options{Prefix: etcdtest.Prefix(t), SecretKey: testKey(t), Authority: bad}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched key: %v", err)
	}
}

func mustID(t *testing.T, s string) spiffeid.ID {
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
