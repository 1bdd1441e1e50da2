package config

// ListenerTLS terminates TLS on a listener. Certificate, key and CA files
// are read when the listener starts and again whenever they change on disk;
// a file that does not parse keeps the previous material in use.
type ListenerTLS struct {
	// Certificates are chosen by the client's SNI: a certificate answers
	// for the names in its ServerNames or, when those are empty, for the
	// DNS names of its leaf. Exact names beat "*.suffix" wildcards. The
	// first certificate answers a client that sends no SNI or an unknown
	// name.
	Certificates []CertificateFiles `yaml:"certificates" json:"certificates"`
	// MinVersion is "1.2" or "1.3". Empty means 1.2.
	MinVersion string `yaml:"min_version,omitempty" json:"min_version,omitempty"`
	// MaxVersion is "1.2" or "1.3". Empty means 1.3.
	MaxVersion string `yaml:"max_version,omitempty" json:"max_version,omitempty"`
	// ClientCAFile is a PEM bundle of the CAs that sign client certificates.
	ClientCAFile string `yaml:"client_ca_file,omitempty" json:"client_ca_file,omitempty"`
	// ClientAuth is "none", "optional" (a certificate, when sent, must
	// verify) or "required". Empty means "required" with a ClientCAFile and
	// "none" without.
	ClientAuth string `yaml:"client_auth,omitempty" json:"client_auth,omitempty"`
	// ForwardClientCert says what becomes of X-Forwarded-Client-Cert.
	// "sanitize" (the default) removes the header a client sent;
	// "sanitize_set" removes it and sets it anew from the verified client
	// certificate, in Envoy's format.
	ForwardClientCert string `yaml:"forward_client_cert,omitempty" json:"forward_client_cert,omitempty"`
	// HandshakeTimeout bounds a TLS handshake. Zero means 10s.
	HandshakeTimeout Duration `yaml:"handshake_timeout,omitempty" json:"handshake_timeout,omitempty"`
	// Mesh serves the proxy's workload certificate (SPIFFE SVID, from the
	// control plane's CA) instead of Certificates, and requires a client
	// certificate of the mesh's trust bundle. It excludes Certificates,
	// ClientCAFile and ClientAuth.
	Mesh bool `yaml:"mesh,omitempty" json:"mesh,omitempty"`
	// Permissive, with Mesh, also serves clients that speak plain text on
	// the same port (a connection whose first byte is not a TLS
	// handshake), for a migration to the mesh: their requests carry no
	// peer identity.
	Permissive bool `yaml:"permissive,omitempty" json:"permissive,omitempty"`
}

// CertificateFiles names a PEM certificate chain and its private key:
// either files on the proxy's disk or a Certificate of the configuration.
type CertificateFiles struct {
	CertFile string `yaml:"cert_file,omitempty" json:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty" json:"key_file,omitempty"`
	// Certificate names an entry of the top-level certificates instead of
	// CertFile and KeyFile.
	Certificate string `yaml:"certificate,omitempty" json:"certificate,omitempty"`
	// ServerNames are the SNI names this certificate answers: exact names
	// or "*.suffix" wildcards. Empty means the DNS names of the leaf.
	ServerNames []string `yaml:"server_names,omitempty" json:"server_names,omitempty"`
}

// Certificate is a PEM certificate chain and its private key held in the
// configuration itself, for listeners to name. The control plane stores
// KeyPEM encrypted and never returns it.
type Certificate struct {
	Name    string `yaml:"name" json:"name"`
	CertPEM string `yaml:"cert_pem" json:"cert_pem"`
	KeyPEM  string `yaml:"key_pem" json:"key_pem"`
}

// ListenerHTTP2 configures HTTP/2 on a listener. On a TLS listener HTTP/2
// is offered by ALPN unless Disabled; on a cleartext listener it is served
// only with H2C.
type ListenerHTTP2 struct {
	// Disabled offers only http/1.1 by ALPN.
	Disabled bool `yaml:"disabled,omitempty" json:"disabled,omitempty"`
	// H2C accepts HTTP/2 with prior knowledge (the connection preface) on
	// a listener without TLS.
	H2C bool `yaml:"h2c,omitempty" json:"h2c,omitempty"`
	// MaxConcurrentStreams bounds the streams a client may open at once on
	// one connection. Zero means 250.
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams,omitempty" json:"max_concurrent_streams,omitempty"`
	// InitialStreamWindow is the flow-control window of a stream (how much
	// request body the proxy buffers for it). Zero means 1 MiB.
	InitialStreamWindow int32 `yaml:"initial_stream_window,omitempty" json:"initial_stream_window,omitempty"`
	// InitialConnectionWindow is the flow-control window of a connection.
	// Zero means 4 MiB.
	InitialConnectionWindow int32 `yaml:"initial_connection_window,omitempty" json:"initial_connection_window,omitempty"`
	// MaxReadFrameSize is the largest frame the proxy accepts. Zero means 16 KiB.
	MaxReadFrameSize uint32 `yaml:"max_read_frame_size,omitempty" json:"max_read_frame_size,omitempty"`
}

// ListenerHTTP3 serves HTTP/3 over QUIC on the UDP port of the listener's
// address, with the listener's TLS settings. The TCP side advertises it
// with Alt-Svc.
type ListenerHTTP3 struct {
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Allow0RTT accepts requests in TLS early data. Such requests can be
	// replayed by an attacker; leave it off unless every route is safe to
	// replay.
	Allow0RTT bool `yaml:"allow_0rtt,omitempty" json:"allow_0rtt,omitempty"`
	// MaxConcurrentStreams bounds the request streams a client may open at
	// once on one connection. Zero means 250.
	MaxConcurrentStreams int64 `yaml:"max_concurrent_streams,omitempty" json:"max_concurrent_streams,omitempty"`
	// AltSvcMaxAge is how long clients may remember the Alt-Svc
	// advertisement. Zero means 24h.
	AltSvcMaxAge Duration `yaml:"alt_svc_max_age,omitempty" json:"alt_svc_max_age,omitempty"`
}

// ClusterTLS is TLS to a cluster's endpoints.
type ClusterTLS struct {
	// SNI is the server name sent and verified. Empty means the host of
	// the endpoint's address when it is a name, and no SNI for an IP
	// address (whose certificate must then carry that IP).
	SNI string `yaml:"sni,omitempty" json:"sni,omitempty"`
	// CAFile is a PEM bundle of the CAs the endpoints' certificates must
	// chain to. Empty means the system's roots.
	CAFile string `yaml:"ca_file,omitempty" json:"ca_file,omitempty"`
	// CertFile and KeyFile are the proxy's client certificate for mTLS.
	CertFile string `yaml:"cert_file,omitempty" json:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty" json:"key_file,omitempty"`
	// ALPN lists the protocols offered. Empty means "h2" for protocol
	// http2 and "http/1.1" otherwise.
	ALPN []string `yaml:"alpn,omitempty" json:"alpn,omitempty"`
	// MinVersion is "1.2" or "1.3". Empty means 1.2.
	MinVersion string `yaml:"min_version,omitempty" json:"min_version,omitempty"`
	// InsecureSkipVerify accepts any certificate the endpoints present.
	// Anyone on the path can then read and change the traffic; the proxy
	// logs a warning for every configuration that sets it.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify_i_know_what_i_am_doing,omitempty" json:"insecure_skip_verify_i_know_what_i_am_doing,omitempty"`
	// Mesh originates mTLS with the proxy's workload certificate and
	// verifies the endpoints' certificates against the mesh's trust
	// bundle, instead of CAFile, CertFile and KeyFile.
	Mesh bool `yaml:"mesh,omitempty" json:"mesh,omitempty"`
	// ExpectedIdentities are the SPIFFE IDs the endpoints may present
	// under Mesh ("spiffe://wasmgate.local/ns/shop/sa/orders"). Empty
	// accepts any identity of the trust domain.
	ExpectedIdentities []string `yaml:"expected_identities,omitempty" json:"expected_identities,omitempty"`
}

// TLS client authentication modes.
const (
	ClientAuthNone     = "none"
	ClientAuthOptional = "optional"
	ClientAuthRequired = "required"
)

// X-Forwarded-Client-Cert modes.
const (
	ForwardClientCertSanitize    = "sanitize"
	ForwardClientCertSanitizeSet = "sanitize_set"
)

// Upstream protocols.
const (
	ProtocolHTTP1 = "http1"
	ProtocolHTTP2 = "http2"
	// ProtocolDownstream sends each request in the protocol it came in
	// on, as Envoy's use_downstream_protocol_config: HTTP/2 and HTTP/3
	// requests (gRPC among them) over HTTP/2, HTTP/1.1 ones over
	// HTTP/1.1. The mesh's clusters use it.
	ProtocolDownstream = "downstream"
)

// EffectiveClientAuth returns the client authentication mode with its
// default applied.
func (t *ListenerTLS) EffectiveClientAuth() string {
	switch {
	case t.ClientAuth != "":
		return t.ClientAuth
	case t.ClientCAFile != "":
		return ClientAuthRequired
	}
	return ClientAuthNone
}
