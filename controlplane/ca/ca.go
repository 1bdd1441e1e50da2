// Package ca is the control plane's certificate authority: it issues
// SPIFFE X.509 workload certificates (SVIDs) to proxies against a
// certificate signing request, authenticated by a join token the first
// time and by the proxy's current certificate afterwards; it keeps the
// trust bundle and rotates its root in steps that never fail a handshake.
//
// Everything lives in etcd under <prefix>/identity/: the CA's state with
// its private keys sealed by package secret, the join tokens (hashed), and
// one record per proxy of the certificate it holds. Any number of control
// planes may serve one CA.
package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/controlplane/secret"
)

// Defaults and bounds of Options.
const (
	DefaultTrustDomain = "wasmgate.local"
	DefaultLifetime    = 24 * time.Hour
	// MinLifetime is the shortest lifetime an operator may configure.
	MinLifetime = 5 * time.Minute
	// RootLifetime is the lifetime of a root the CA makes itself.
	RootLifetime = 10 * 365 * 24 * time.Hour
	// backdate is how far before now a certificate starts, for clocks
	// that run a little behind; a tenth of the lifetime at most, so that
	// a proxy renewing at half of NotBefore..NotAfter renews at about
	// half of the time it really has.
	backdate = time.Minute
)

func backdateFor(life time.Duration) time.Duration { return min(backdate, life/10) }

// Options configure a CA. SecretKey is required.
type Options struct {
	// Prefix is the etcd key prefix; empty means /wasmgate.
	Prefix string
	// TrustDomain names the mesh; empty means DefaultTrustDomain. It must
	// match the stored state's when the CA exists already.
	TrustDomain string
	// SecretKey seals the CA's private keys in etcd.
	SecretKey *secret.Key
	// Lifetime is the lifetime of issued certificates; zero means
	// DefaultLifetime. It may not be below MinLifetime unless
	// AllowShortLifetimes is set.
	Lifetime time.Duration
	// AllowShortLifetimes lifts the MinLifetime bound, for tests that
	// watch certificates renew in seconds.
	AllowShortLifetimes bool
	// Authority, when set, is an operator's root or intermediate to sign
	// with, instead of a root the CA makes. It is used when the CA is
	// first created; a CA that exists keeps its state.
	Authority *Authority
	// Logger receives refusals and changes; nil discards them.
	Logger *zap.Logger
}

// Authority is a signing certificate and its key, PEM-encoded. For an
// intermediate, CertPEM holds the intermediate first, then any
// certificates above it up to and including the root that proxies trust.
type Authority struct {
	CertPEM []byte
	KeyPEM  []byte
}

// CA issues certificates for one trust domain. It is safe for concurrent
// use.
type CA struct {
	cli    *clientv3.Client
	keys   keys
	td     spiffeid.TrustDomain
	key    *secret.Key
	life   time.Duration
	logger *zap.Logger

	mu     sync.Mutex
	loaded *loadedState // the state last read, parsed, by revision
}

// keys names the CA's etcd keys.
type keys struct{ prefix string }

func (k keys) state() string            { return k.prefix + "/identity/ca" }
func (k keys) tokens() string           { return k.prefix + "/identity/tokens/" }
func (k keys) token(id string) string   { return k.tokens() + id }
func (k keys) proxies() string          { return k.prefix + "/identity/proxies/" }
func (k keys) proxy(name string) string { return k.proxies() + name }

// state is the CA as stored in etcd. Its ModRevision is the bundle's
// revision.
type state struct {
	TrustDomain string      `json:"trust_domain"`
	Authorities []authority `json:"authorities"`
	// Signer is the ID of the authority that signs.
	Signer string `json:"signer"`
	// Phase is where a root rotation stands (see Rotate).
	Phase string `json:"phase"`
}

// authority is one trusted root, or an operator's intermediate and the
// root above it. KeyPEM is sealed.
type authority struct {
	ID       string    `json:"id"`
	CertPEM  string    `json:"cert_pem"`  // the signing certificate
	ChainPEM string    `json:"chain_pem"` // certificates between it and the root, if any
	RootPEM  string    `json:"root_pem"`  // the trust anchor
	KeyPEM   string    `json:"key_pem"`   // sealed with the secret key
	Provided bool      `json:"provided,omitempty"`
	AddedAt  time.Time `json:"added_at"`
}

// Rotation phases.
const (
	// PhaseStable: one authority, which signs.
	PhaseStable = "stable"
	// PhaseAdded: a new root is trusted beside the old one, which still
	// signs; proxies are learning the new bundle.
	PhaseAdded = "added"
	// PhaseActivated: the new root signs and proxies are re-issued; the
	// old root is still trusted so that certificates it signed verify.
	PhaseActivated = "activated"
)

// loadedState is a state with its keys opened and certificates parsed.
type loadedState struct {
	rev    int64
	st     state
	signer *signer
	roots  []*x509.Certificate
	bundle *x509bundle.Bundle
	pem    []byte // the roots, PEM-encoded
}

type signer struct {
	id    string
	cert  *x509.Certificate
	chain [][]byte // DER of the signing certificate and those above it, root excluded
	key   crypto.Signer
}

// New opens the CA under o.Prefix, creating it (a new root, or
// o.Authority) when etcd holds none.
func New(ctx context.Context, cli *clientv3.Client, o Options) (*CA, error) {
	if o.SecretKey == nil {
		return nil, errors.New("ca: a secret key is required to keep the CA's key in etcd (--secret-key-file)")
	}
	if o.Prefix == "" {
		o.Prefix = "/wasmgate"
	}
	if o.TrustDomain == "" {
		o.TrustDomain = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: trust domain %q: %w", o.TrustDomain, err)
	}
	if o.Lifetime == 0 {
		o.Lifetime = DefaultLifetime
	}
	if o.Lifetime < MinLifetime && !o.AllowShortLifetimes {
		return nil, fmt.Errorf("ca: certificate lifetime %s is below the minimum of %s", o.Lifetime, MinLifetime)
	}
	if o.Lifetime <= 0 {
		return nil, fmt.Errorf("ca: certificate lifetime %s must be positive", o.Lifetime)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	c := &CA{cli: cli, keys: keys{o.Prefix}, td: td, key: o.SecretKey, life: o.Lifetime, logger: o.Logger}
	resp, err := cli.Get(ctx, c.keys.state())
	if err != nil {
		return nil, fmt.Errorf("ca: reading the CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		a, err := c.newAuthority(o.Authority)
		if err != nil {
			return nil, err
		}
		st := state{TrustDomain: td.Name(), Authorities: []authority{a}, Signer: a.ID, Phase: PhaseStable}
		b, _ := json.Marshal(st)
		tx, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(c.keys.state()), "=", 0)).
			Then(clientv3.OpPut(c.keys.state(), string(b))).Commit()
		if err != nil {
			return nil, fmt.Errorf("ca: storing the CA: %w", err)
		}
		if tx.Succeeded {
			o.Logger.Info("certificate authority created", zap.String("trust_domain", td.Name()),
				zap.String("authority", a.ID), zap.Bool("operator_provided", a.Provided))
		}
	} else if o.Authority != nil {
		o.Logger.Info("the CA exists in etcd already; the provided authority is not used (rotate to change it)")
	}
	ls, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	if ls.st.TrustDomain != td.Name() {
		return nil, fmt.Errorf("ca: etcd holds a CA for trust domain %q, not %q", ls.st.TrustDomain, td.Name())
	}
	return c, nil
}

// TrustDomain is the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Lifetime is the lifetime of the certificates the CA issues.
func (c *CA) Lifetime() time.Duration { return c.life }

// newAuthority makes a root, or checks and seals an operator's authority.
func (c *CA) newAuthority(op *Authority) (authority, error) {
	if op != nil {
		return c.providedAuthority(op)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return authority{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{"wasmgate"}, CommonName: "wasmgate mesh root " + now.UTC().Format(time.RFC3339)},
		URIs:                  []*url.URL{c.td.ID().URL()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return authority{}, fmt.Errorf("ca: making the root: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return authority{}, err
	}
	kpem := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	return authority{ID: fingerprint(der), CertPEM: encodeCert(der), RootPEM: encodeCert(der),
		KeyPEM: c.key.Seal(string(kpem)), AddedAt: now.UTC()}, nil
}

// providedAuthority checks an operator's root or intermediate: a CA
// certificate that may sign, valid now, whose key matches and whose chain
// reaches the last certificate given.
func (c *CA) providedAuthority(op *Authority) (authority, error) {
	var certs []*x509.Certificate
	rest := op.CertPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return authority{}, fmt.Errorf("ca: authority certificate: %w", err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return authority{}, errors.New("ca: authority certificate: no PEM certificate")
	}
	sc := certs[0]
	switch {
	case !sc.IsCA || !sc.BasicConstraintsValid:
		return authority{}, errors.New("ca: authority certificate: not a CA certificate (basic constraints CA:TRUE is required)")
	case sc.KeyUsage != 0 && sc.KeyUsage&x509.KeyUsageCertSign == 0:
		return authority{}, errors.New("ca: authority certificate: its key usage does not allow signing certificates")
	case time.Now().After(sc.NotAfter):
		return authority{}, fmt.Errorf("ca: authority certificate: expired on %s", sc.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := parseKey(op.KeyPEM)
	if err != nil {
		return authority{}, fmt.Errorf("ca: authority key: %w", err)
	}
	if !publicKeysEqual(key.Public(), sc.PublicKey) {
		return authority{}, errors.New("ca: authority key: does not match the certificate")
	}
	root := certs[len(certs)-1]
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	if _, err := sc.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return authority{}, fmt.Errorf("ca: authority certificate: does not chain to the last certificate given, the root: %w", err)
	}
	var chain string
	for _, ic := range certs[1 : len(certs)-1] {
		chain += encodeCert(ic.Raw)
	}
	if len(certs) == 1 {
		chain = ""
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return authority{}, err
	}
	kpem := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	return authority{ID: fingerprint(root.Raw), CertPEM: encodeCert(sc.Raw), ChainPEM: chain, RootPEM: encodeCert(root.Raw),
		KeyPEM: c.key.Seal(string(kpem)), Provided: true, AddedAt: time.Now().UTC()}, nil
}

// parseKey reads a PKCS#8, EC or PKCS#1 private key.
func parseKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("the key cannot sign")
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS#8, EC or RSA private key")
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// load returns the state as etcd holds it now, parsed; the parse is
// reused while the state's revision does not change.
func (c *CA) load(ctx context.Context) (*loadedState, error) {
	resp, err := c.cli.Get(ctx, c.keys.state())
	if err != nil {
		return nil, fmt.Errorf("ca: reading the CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errors.New("ca: the CA is missing from etcd")
	}
	kv := resp.Kvs[0]
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded != nil && c.loaded.rev == kv.ModRevision {
		return c.loaded, nil
	}
	ls, err := c.parse(kv.ModRevision, kv.Value)
	if err != nil {
		return nil, err
	}
	if c.loaded == nil || c.loaded.rev < ls.rev {
		c.loaded = ls
	}
	return ls, nil
}

func (c *CA) parse(rev int64, raw []byte) (*loadedState, error) {
	ls := &loadedState{rev: rev}
	if err := json.Unmarshal(raw, &ls.st); err != nil {
		return nil, fmt.Errorf("ca: the stored CA is corrupt: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(ls.st.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: the stored trust domain: %w", err)
	}
	ls.bundle = x509bundle.New(td)
	for _, a := range ls.st.Authorities {
		root, err := parseCert(a.RootPEM)
		if err != nil {
			return nil, fmt.Errorf("ca: authority %s: root: %w", a.ID, err)
		}
		if !ls.bundle.HasX509Authority(root) {
			ls.bundle.AddX509Authority(root)
			ls.roots = append(ls.roots, root)
			ls.pem = append(ls.pem, a.RootPEM...)
		}
		if a.ID != ls.st.Signer {
			continue
		}
		plain, err := c.key.Open(a.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("ca: authority %s: key: %w", a.ID, err)
		}
		key, err := parseKey([]byte(plain))
		if err != nil {
			return nil, fmt.Errorf("ca: authority %s: key: %w", a.ID, err)
		}
		cert, err := parseCert(a.CertPEM)
		if err != nil {
			return nil, fmt.Errorf("ca: authority %s: %w", a.ID, err)
		}
		s := &signer{id: a.ID, cert: cert, key: key, chain: [][]byte{cert.Raw}}
		if cert.Equal(root) {
			s.chain = nil // a root is not sent: peers have it
		}
		rest := []byte(a.ChainPEM)
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			s.chain = append(s.chain, b.Bytes)
		}
		ls.signer = s
	}
	if ls.signer == nil {
		return nil, fmt.Errorf("ca: the signing authority %q is not in the stored CA", ls.st.Signer)
	}
	return ls, nil
}

func parseCert(p string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

// fingerprint is the ID of an authority: the start of the SHA-256 of its
// root.
func fingerprint(der []byte) string {
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:10])
}

func encodeCert(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// AuthorityID is the ID the CA gives the authority of a root: the start
// of the SHA-256 of its DER.
func AuthorityID(root *x509.Certificate) string { return fingerprint(root.Raw) }
