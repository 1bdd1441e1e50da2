package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// SignRequest asks for a certificate. Exactly one of JoinToken and Peer
// authenticates it.
type SignRequest struct {
	// CSR is the PEM or DER certificate signing request. Its URI SAN, when
	// present, must be the identity the request is allowed; without one
	// the CA fills that identity in.
	CSR []byte
	// JoinToken is a token made by CreateToken, for a proxy's first
	// certificate.
	JoinToken string
	// Peer is the verified or unverified chain the client presented over
	// mTLS, for a renewal; the CA verifies it against the current bundle.
	Peer []*x509.Certificate
	// Proxy names the proxy, for the status; empty means the SPIFFE ID.
	Proxy string
	// Lifetime asks for a shorter lifetime than the CA's; zero means the
	// CA's.
	Lifetime time.Duration
}

// Issued is a signed certificate.
type Issued struct {
	ID       string    `json:"spiffe_id"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	// CertPEM is the leaf followed by any intermediates: the chain the
	// proxy presents.
	CertPEM string `json:"cert_pem"`
	// Bundle is the trust bundle at the time of issue.
	Bundle Bundle `json:"bundle"`
}

// Bundle is the set of roots that proxies trust.
type Bundle struct {
	TrustDomain string `json:"trust_domain"`
	// Revision changes whenever the bundle or the signer changes.
	Revision int64 `json:"revision"`
	// RootsPEM are the trusted roots.
	RootsPEM string `json:"roots_pem"`
	// Signer is the ID of the authority that signs now; a proxy whose
	// certificate another authority signed renews it.
	Signer string `json:"signer"`
	Phase  string `json:"phase"`
}

// RefusedError is a request the CA refuses; nothing was issued. Its
// message says why, for the requester.
type RefusedError struct {
	// Field names what was wrong: "csr", "join_token" or "peer".
	Field  string
	Reason string
}

func (e *RefusedError) Error() string { return e.Field + ": " + e.Reason }

func refuse(field, format string, args ...any) error {
	return &RefusedError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// nameRE is what a namespace or service account may be: a DNS label as
// Kubernetes names them, up to 63 characters.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// CheckName checks a namespace or service account name.
func CheckName(field, n string) error {
	if !nameRE.MatchString(n) {
		return fmt.Errorf("%s: %q must be 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit", field, n)
	}
	return nil
}

// ID returns the SPIFFE ID of a workload of the CA's trust domain.
func (c *CA) ID(namespace, serviceAccount string) (spiffeid.ID, error) {
	if err := CheckName("namespace", namespace); err != nil {
		return spiffeid.ID{}, err
	}
	if err := CheckName("service_account", serviceAccount); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(c.td, "ns", namespace, "sa", serviceAccount)
}

// ParseWorkloadID parses a SPIFFE ID of the form
// spiffe://<td>/ns/<namespace>/sa/<service-account>.
func ParseWorkloadID(s string) (id spiffeid.ID, namespace, serviceAccount string, err error) {
	id, err = spiffeid.FromString(s)
	if err != nil {
		return id, "", "", err
	}
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" {
		return id, "", "", fmt.Errorf("%q is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	return id, seg[1], seg[3], nil
}

// Sign checks and signs a request. A refusal is a *RefusedError and is
// logged; nothing is issued then, and a join token is not used up.
func (c *CA) Sign(ctx context.Context, req SignRequest) (*Issued, error) {
	out, err := c.sign(ctx, req)
	if err != nil {
		var re *RefusedError
		if errors.As(err, &re) {
			c.logger.Warn("certificate request refused", zap.String("proxy", req.Proxy), zap.String("field", re.Field), zap.String("reason", re.Reason))
		}
		return nil, err
	}
	c.logger.Debug("certificate issued", zap.String("proxy", req.Proxy), zap.String("spiffe_id", out.ID), zap.String("serial", out.Serial))
	return out, nil
}

func (c *CA) sign(ctx context.Context, req SignRequest) (*Issued, error) {
	csr, err := parseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	ls, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	// Who asks: the token's identity, or the current certificate's.
	var allowed spiffeid.ID
	var tok *tokenUse
	switch {
	case req.JoinToken != "" && len(req.Peer) > 0:
		return nil, refuse("join_token", "send either a join token or a client certificate, not both")
	case req.JoinToken != "":
		tok, err = c.checkToken(ctx, req.JoinToken)
		if err != nil {
			return nil, err
		}
		allowed = tok.id
	case len(req.Peer) > 0:
		allowed, err = c.verifyPeer(ls, req.Peer)
		if err != nil {
			return nil, err
		}
	default:
		return nil, refuse("join_token", "a join token (first certificate) or a current certificate over mTLS (renewal) is required")
	}
	if err := c.checkCSR(csr, allowed); err != nil {
		return nil, err
	}
	life := c.life
	if req.Lifetime > 0 && req.Lifetime < life {
		life = req.Lifetime
	}
	now := time.Now()
	notAfter := now.Add(life)
	if notAfter.After(ls.signer.cert.NotAfter) {
		notAfter = ls.signer.cert.NotAfter
	}
	serial := randomSerial()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"wasmgate"}},
		URIs:                  []*url.URL{allowed.URL()},
		NotBefore:             now.Add(-backdateFor(life)),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	name := req.Proxy
	if name == "" {
		name = allowed.String()
	}
	if err := CheckProxyName(name); err != nil {
		return nil, refuse("proxy", "%v", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ls.signer.cert, csr.PublicKey, ls.signer.key)
	if err != nil {
		return nil, fmt.Errorf("ca: signing: %w", err)
	}
	var certPEM bytes.Buffer
	certPEM.Grow(1024)
	pem.Encode(&certPEM, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, ic := range ls.signer.chain {
		pem.Encode(&certPEM, &pem.Block{Type: "CERTIFICATE", Bytes: ic})
	}
	out := &Issued{ID: allowed.String(), Serial: serial.Text(16), NotAfter: notAfter.UTC(), CertPEM: certPEM.String(), Bundle: ls.bundleOut()}
	rec, _ := json.Marshal(ProxyRecord{Proxy: name, ID: out.ID, Serial: out.Serial, NotAfter: out.NotAfter,
		Authority: ls.signer.id, BundleRevision: ls.rev, IssuedAt: now.UTC()})
	// The certificate leaves the CA only once the proxy's record is
	// written and, for a first certificate, the token's use counted in
	// the same transaction: two proxies racing on a single-use token get
	// one certificate between them.
	put := clientv3.OpPut(c.keys.proxy(name), string(rec))
	if tok != nil {
		err = c.useToken(ctx, tok, put)
	} else if _, err = c.cli.Put(ctx, c.keys.proxy(name), string(rec)); err != nil {
		err = fmt.Errorf("ca: recording the certificate of %q: %w", name, err)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (ls *loadedState) bundleOut() Bundle {
	return Bundle{TrustDomain: ls.st.TrustDomain, Revision: ls.rev, RootsPEM: string(ls.pem), Signer: ls.st.Signer, Phase: ls.st.Phase}
}

// parseCSR reads a PEM or DER request and checks its signature.
func parseCSR(b []byte) (*x509.CertificateRequest, error) {
	if len(b) == 0 {
		return nil, refuse("csr", "is required")
	}
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" {
			return nil, refuse("csr", "PEM block %q is not a CERTIFICATE REQUEST", blk.Type)
		}
		der = blk.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, refuse("csr", "not a certificate request: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse("csr", "its signature does not verify: %v", err)
	}
	return csr, nil
}

// checkCSR applies the SPIFFE rules to what a request asks: one SPIFFE
// ID at most, the allowed one; no other name; no CA; a strong key.
func (c *CA) checkCSR(csr *x509.CertificateRequest, allowed spiffeid.ID) error {
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return refuse("csr", "the ECDSA key is on curve %s; P-256 or P-384 is required", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return refuse("csr", "the RSA key has %d bits; at least 2048 are required", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return refuse("csr", "unsupported key type %T (want ECDSA P-256/P-384, RSA 2048+ or Ed25519)", k)
	}
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(oidBasicConstraints) {
			continue
		}
		var bc struct {
			IsCA       bool `asn1:"optional"`
			MaxPathLen int  `asn1:"optional,default:-1"`
		}
		if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil {
			return refuse("csr", "basic constraints extension does not parse: %v", err)
		}
		if bc.IsCA {
			return refuse("csr", "asks for a CA certificate (basic constraints CA:TRUE); workload certificates cannot sign")
		}
	}
	if len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return refuse("csr", "asks for DNS, IP or email names; a workload certificate carries only its SPIFFE ID")
	}
	switch len(csr.URIs) {
	case 0:
	case 1:
		id, err := spiffeid.FromURI(csr.URIs[0])
		if err != nil {
			return refuse("csr", "URI SAN %q is not a SPIFFE ID: %v", csr.URIs[0], err)
		}
		if id != allowed {
			return refuse("csr", "asks for identity %s, but this request may only ask for %s", id, allowed)
		}
	default:
		return refuse("csr", "asks for %d URI SANs; an SVID has exactly one", len(csr.URIs))
	}
	return nil
}

// verifyPeer checks a renewal's client certificate against the current
// bundle and the SPIFFE rules, and returns its ID.
func (c *CA) verifyPeer(ls *loadedState, chain []*x509.Certificate) (spiffeid.ID, error) {
	id, _, err := x509svid.Verify(chain, ls.bundle)
	if err != nil {
		leaf := chain[0]
		if lid, e := x509svid.IDFromCert(leaf); e == nil && !lid.MemberOf(c.td) {
			return spiffeid.ID{}, refuse("peer", "the client certificate is from trust domain %q, not %q", lid.TrustDomain().Name(), c.td.Name())
		}
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return spiffeid.ID{}, refuse("peer", "the client certificate is not signed by a root of the current trust bundle (was its root removed?): %v", err)
		}
		return spiffeid.ID{}, refuse("peer", "the client certificate does not verify: %v", err)
	}
	if _, _, _, err := ParseWorkloadID(id.String()); err != nil {
		return spiffeid.ID{}, refuse("peer", "%v", err)
	}
	return id, nil
}

// VerifyPeer checks a client certificate chain against the current bundle
// and the SPIFFE rules and returns its SPIFFE ID.
func (c *CA) VerifyPeer(ctx context.Context, chain []*x509.Certificate) (spiffeid.ID, error) {
	if len(chain) == 0 {
		return spiffeid.ID{}, refuse("peer", "no client certificate")
	}
	ls, err := c.load(ctx)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return c.verifyPeer(ls, chain)
}

// Bundle returns the current trust bundle.
func (c *CA) Bundle(ctx context.Context) (Bundle, error) {
	ls, err := c.load(ctx)
	if err != nil {
		return Bundle{}, err
	}
	return ls.bundleOut(), nil
}

// WaitBundle returns the bundle once its revision is above after, or the
// current one when ctx ends first (with no error), so that a proxy can
// long-poll it.
func (c *CA) WaitBundle(ctx context.Context, after int64) (Bundle, error) {
	b, err := c.Bundle(ctx)
	if err != nil || b.Revision > after {
		return b, err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for range c.cli.Watch(wctx, c.keys.state(), clientv3.WithRev(b.Revision+1)) {
		nb, err := c.Bundle(ctx)
		if err != nil || nb.Revision > after {
			return nb, err
		}
	}
	if ctx.Err() != nil {
		return c.Bundle(context.WithoutCancel(ctx))
	}
	return c.Bundle(ctx)
}

// ProxyRecord is what the CA last issued to a proxy.
type ProxyRecord struct {
	Proxy     string    `json:"proxy"`
	ID        string    `json:"spiffe_id"`
	Serial    string    `json:"serial"`
	NotAfter  time.Time `json:"not_after"`
	IssuedAt  time.Time `json:"issued_at"`
	Authority string    `json:"authority"`
	// BundleRevision is the newest bundle the proxy is known to hold.
	BundleRevision int64 `json:"bundle_revision"`
}

// recordGrace is how long after its certificate expired a proxy's record
// is kept.
const recordGrace = time.Hour

// CheckProxyName checks a proxy's name as the CA records it.
func CheckProxyName(n string) error {
	if n == "" || len(n) > 253 {
		return errors.New("the proxy name must be 1 to 253 characters")
	}
	for i := 0; i < len(n); i++ {
		if ch := n[i]; ch < 0x21 || ch > 0x7e {
			return fmt.Errorf("the proxy name %q holds a space or a control or non-ASCII character", n)
		}
	}
	return nil
}

// Acknowledge records that a proxy holds the bundle of the given
// revision, for Status and the rotation's progress. id is the verified
// SPIFFE ID of the caller: a proxy may only speak for its own record.
func (c *CA) Acknowledge(ctx context.Context, proxy string, id spiffeid.ID, revision int64) error {
	if err := CheckProxyName(proxy); err != nil {
		return refuse("proxy", "%v", err)
	}
	key := c.keys.proxy(proxy)
	resp, err := c.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return err
	}
	var r ProxyRecord
	if json.Unmarshal(resp.Kvs[0].Value, &r) != nil || r.BundleRevision >= revision {
		return nil
	}
	if r.ID != id.String() {
		return refuse("proxy", "%s may not speak for proxy %q, which is %s", id, proxy, r.ID)
	}
	r.BundleRevision = revision
	b, _ := json.Marshal(r)
	_, err = c.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).Then(clientv3.OpPut(key, string(b))).Commit()
	return err
}

// ParseBundle returns the roots of b as a bundle of its trust domain.
func ParseBundle(b Bundle) (*x509bundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("bundle trust_domain: %w", err)
	}
	return x509bundle.Parse(td, []byte(b.RootsPEM))
}
