package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Mesh is the proxy's workload identity, for listeners and clusters that
// say `tls: {mesh: true}`: the certificate to present and the roots peers
// must chain to. Both change while the proxy runs (renewal, root
// rotation); every handshake reads them anew, so connections open before
// a change keep the certificate they were made with.
//
// proxy/identity.Agent implements it.
type Mesh interface {
	// Certificate returns the current certificate with its chain and
	// Leaf set, or an error when there is none yet.
	Certificate() (*tls.Certificate, error)
	// TrustBundle returns the current roots of the proxy's trust domain,
	// or nil when there are none yet.
	TrustBundle() *x509bundle.Bundle
}

// Option changes how NewServer and ClientConfig build a TLS
// configuration.
type Option func(*options)

type options struct{ mesh Mesh }

func applyOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithMesh gives the proxy's workload identity, which a listener or
// cluster with `mesh: true` presents and verifies peers with. A nil m is
// ignored.
func WithMesh(m Mesh) Option {
	return func(o *options) {
		if m != nil {
			o.mesh = m
		}
	}
}

// ErrNoMesh is returned for a listener or cluster that says mesh when the
// proxy runs without a workload identity.
var ErrNoMesh = errors.New("tls mesh: this proxy has no workload identity (run it with --join-token and a control plane with --mesh)")

// verifyMeshPeer checks a peer's chain against the bundle with the
// X.509-SVID rules and returns its SPIFFE ID. usage is the extended key
// usage the peer's certificate must allow.
func verifyMeshPeer(m Mesh, chain []*x509.Certificate, usage x509.ExtKeyUsage) (spiffeid.ID, error) {
	if len(chain) == 0 {
		return spiffeid.ID{}, errors.New("tls mesh: the peer sent no certificate")
	}
	b := m.TrustBundle()
	if b == nil {
		return spiffeid.ID{}, errors.New("tls mesh: no trust bundle yet")
	}
	id, _, err := x509svid.Verify(chain, b)
	if err != nil {
		if pid, e := x509svid.IDFromCert(chain[0]); e == nil && !pid.MemberOf(b.TrustDomain()) {
			return pid, fmt.Errorf("tls mesh: the peer %s is not of trust domain %q", pid, b.TrustDomain().Name())
		}
		return id, fmt.Errorf("tls mesh: the peer's certificate: %w", err)
	}
	if eku := chain[0].ExtKeyUsage; len(eku) > 0 && !slices.Contains(eku, usage) && !slices.Contains(eku, x509.ExtKeyUsageAny) {
		return id, fmt.Errorf("tls mesh: the peer's certificate does not allow %s", usageName(usage))
	}
	return id, nil
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageClientAuth {
		return "client authentication"
	}
	return "server authentication"
}

// meshServerConfig is a listener's configuration under mesh: the current
// certificate, and a client certificate required and checked against the
// current bundle.
func (s *Server) meshServerConfig() *tls.Config {
	m := s.mesh
	return &tls.Config{
		MinVersion: parseVersion(s.cfg.MinVersion, tls.VersionTLS12),
		MaxVersion: parseVersion(s.cfg.MaxVersion, tls.VersionTLS13),
		NextProtos: s.alpn,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return m.Certificate()
		},
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyMeshPeer(m, cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// meshClientConfig originates mTLS with the proxy's certificate and
// accepts a server whose SPIFFE ID is one of expected (any of the trust
// domain when expected is empty).
func meshClientConfig(m Mesh, expected []string, conf *tls.Config) (*tls.Config, error) {
	if m == nil {
		return nil, ErrNoMesh
	}
	ids := make([]spiffeid.ID, len(expected))
	for i, e := range expected {
		id, err := spiffeid.FromString(e)
		if err != nil {
			return nil, fmt.Errorf("tls expected_identities[%d]: %w", i, err)
		}
		ids[i] = id
	}
	conf.InsecureSkipVerify = true // verified below, against the bundle of the moment
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := verifyMeshPeer(m, cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
		if err != nil {
			return err
		}
		if len(ids) > 0 && !slices.Contains(ids, id) {
			return fmt.Errorf("tls mesh: the server is %s, not an expected identity %v", id, expected)
		}
		return nil
	}
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return m.Certificate()
	}
	return conf, nil
}

// PeerSPIFFEID returns the SPIFFE ID of a connection's verified peer, the
// value of the `connection.uri_san_peer_certificate` and `source.principal`
// properties, or "" when the peer sent no SVID.
func PeerSPIFFEID(cs *tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return ""
	}
	return id.String()
}
