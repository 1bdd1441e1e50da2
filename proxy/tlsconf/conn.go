package tlsconf

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/internal/deadline"
	"github.com/wasmgate/wasmgate/proxy/internal/sockio"
)

// Identity is what a handshake taught the proxy about a downstream
// connection. It is computed once per connection and shared, read only, by
// every request on it.
type Identity struct {
	// Info is the connection's TLS facts for filters.
	Info *filter.TLSInfo
	// XFCC is the X-Forwarded-Client-Cert value for the client's verified
	// certificate in Envoy's format, or nil when the client sent none.
	XFCC []byte
}

// Identify computes the identity of a connection from its handshake. The
// proxy's side is described by the certificate s serves for the SNI name.
func (s *Server) Identify(cs *tls.ConnectionState) Identity {
	info := &filter.TLSInfo{
		Version:    versionName(cs.Version),
		ServerName: cs.ServerName,
		ALPN:       cs.NegotiatedProtocol,
	}
	var local localIdentity
	if s != nil {
		local = s.local(cs.ServerName)
	}
	info.LocalSubject, info.LocalURISANs, info.LocalDNSSANs = local.subject, local.uris, local.dns
	if len(cs.PeerCertificates) == 0 {
		return Identity{Info: info}
	}
	leaf := cs.PeerCertificates[0]
	sum := sha256.Sum256(leaf.Raw)
	info.PeerPresented = true
	// A mesh listener requires and verifies the client's SVID in the
	// handshake itself, which crypto/tls then reports no chains for.
	info.PeerVerified = len(cs.VerifiedChains) > 0 || (s != nil && s.cfg.Mesh)
	info.PeerSubject = leaf.Subject.String()
	info.PeerURISANs = uriStrings(leaf)
	info.PeerDNSSANs = leaf.DNSNames
	info.PeerSHA256 = hex.EncodeToString(sum[:])
	if !info.PeerVerified {
		return Identity{Info: info}
	}
	return Identity{Info: info, XFCC: AppendXFCC(nil, info)}
}

// SPIFFE returns the SPIFFE IDs of the connection's verified peer and of
// the proxy's certificate, each "" when there is none.
func (id *Identity) SPIFFE() (peer, local string) {
	if id.Info == nil {
		return "", ""
	}
	if id.Info.PeerVerified {
		peer = firstSPIFFE(id.Info.PeerURISANs)
	}
	return peer, firstSPIFFE(id.Info.LocalURISANs)
}

// AppendXFCC appends the X-Forwarded-Client-Cert element that describes
// info's peer, in Envoy's format:
//
//	By=<proxy URI SAN>;Hash=<sha256>;Subject="<subject>";URI=<URI SAN>;DNS=<DNS SAN>
//
// By is left out when the proxy's certificate has no URI SAN; URI and DNS
// repeat for every SAN of the kind.
func AppendXFCC(b []byte, info *filter.TLSInfo) []byte {
	start := len(b)
	sep := func() {
		if len(b) > start {
			b = append(b, ';')
		}
	}
	for _, u := range info.LocalURISANs {
		sep()
		b = append(b, "By="...)
		b = appendXFCCValue(b, u, false)
	}
	sep()
	b = append(b, "Hash="...)
	b = append(b, info.PeerSHA256...)
	sep()
	b = append(b, "Subject="...)
	b = appendXFCCValue(b, info.PeerSubject, true)
	for _, u := range info.PeerURISANs {
		sep()
		b = append(b, "URI="...)
		b = appendXFCCValue(b, u, false)
	}
	for _, d := range info.PeerDNSSANs {
		sep()
		b = append(b, "DNS="...)
		b = appendXFCCValue(b, d, false)
	}
	return b
}

// appendXFCCValue appends v, in double quotes when asked or when it holds
// a character that separates elements, pairs or keys; a double quote or
// backslash within is escaped.
func appendXFCCValue(b []byte, v string, quote bool) []byte {
	for i := 0; i < len(v) && !quote; i++ {
		switch v[i] {
		case ',', ';', '=', '"', ' ':
			quote = true
		}
	}
	if !quote {
		return append(b, v...)
	}
	b = append(b, '"')
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, v[i])
	}
	return append(b, '"')
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1.0"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return ""
}

// Conn is a downstream TLS connection that remembers its identity. Its
// handshake is bounded by the listener's handshake timeout.
type Conn struct {
	*tls.Conn
	srv *Server

	once sync.Once
	err  error
	id   Identity

	rd deadline.Read // the read deadline in force
}

// SetReadDeadline keeps the read deadline in force when t is at most the
// listener's ReadSlack earlier (see package deadline).
func (c *Conn) SetReadDeadline(t time.Time) error { return c.rd.Set(c.Conn, t) }

func (c *Conn) SetDeadline(t time.Time) error {
	c.rd.Forget()
	return c.Conn.SetDeadline(t)
}

// Handshake runs the handshake once, under the handshake timeout, and
// computes the connection's identity. Later calls return the first result.
func (c *Conn) Handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.srv.HandshakeTimeout())
		defer cancel()
		if c.err = c.Conn.HandshakeContext(ctx); c.err != nil {
			return
		}
		cs := c.Conn.ConnectionState()
		c.id = c.srv.Identify(&cs)
		observeHandshake(c.Conn.NetConn(), &cs, c.id.Info)
	})
	return c.err
}

// TLSInfo returns the connection's TLS facts, or nil when the handshake
// failed. It handshakes first if that has not happened yet.
func (c *Conn) TLSInfo() *filter.TLSInfo {
	if c.Handshake() != nil {
		return nil
	}
	return c.id.Info
}

// XFCC returns the X-Forwarded-Client-Cert value for the connection's
// verified client certificate, or nil. It must not be changed.
func (c *Conn) XFCC() []byte {
	if c.Handshake() != nil {
		return nil
	}
	return c.id.XFCC
}

// HandshakeObserver is a connection beneath TLS that learns the outcome
// of the handshake made over it: the proxy's flow records take the TLS
// version, cipher suite and identities from it. It is told once, by the
// goroutine that made the handshake; peer is the verified peer's SPIFFE
// ID and local the proxy's own, each "" when there is none.
type HandshakeObserver interface {
	ObserveHandshake(version, cipher uint16, peer, local string)
}

// observeHandshake tells the first HandshakeObserver beneath c, looking
// through the connections in between by their NetConn method.
func observeHandshake(c net.Conn, cs *tls.ConnectionState, info *filter.TLSInfo) {
	for {
		if o, ok := c.(HandshakeObserver); ok {
			peer, local := (&Identity{Info: info}).SPIFFE()
			o.ObserveHandshake(cs.Version, cs.CipherSuite, peer, local)
			return
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		c = u.NetConn()
	}
}

func firstSPIFFE(uris []string) string {
	for _, u := range uris {
		if strings.HasPrefix(u, "spiffe://") {
			return u
		}
	}
	return ""
}

// Listener accepts TLS connections as *Conn. The handshake happens on the
// connection's first Handshake, Read or Write, not in Accept.
type Listener struct {
	net.Listener
	srv *Server

	// ReadSlack is how late the connections' read deadlines may pass:
	// one that would move the deadline in force earlier by no more than
	// this keeps it (see package deadline). Zero sets every deadline as
	// asked. Set it before the first Accept.
	ReadSlack time.Duration

	perm permissive
}

// NewListener wraps inner so that its connections speak TLS as s says.
func NewListener(inner net.Listener, s *Server) *Listener {
	return &Listener{Listener: inner, srv: s}
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	if l.srv.cfg.Permissive {
		return l.acceptPermissive()
	}
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: tls.Server(sockio.Wrap(c), l.srv.Config()), srv: l.srv, rd: deadline.Read{Slack: l.ReadSlack}}, nil
}
