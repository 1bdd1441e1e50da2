// Package tlsconf turns the TLS settings of the configuration into
// crypto/tls configurations: the server side of a listener (certificates
// by SNI, client CAs, reloaded from disk without a restart), the identity
// of a downstream peer, computed once per connection, and the client side
// of a cluster.
package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasmgate/wasmgate/config"
)

// DefaultHandshakeTimeout bounds a handshake when the listener sets none.
const DefaultHandshakeTimeout = 10 * time.Second

// Server is the TLS side of one listener. Its certificates and client CAs
// live in an immutable state behind an atomic pointer: Reload builds a new
// state and swaps it, so handshakes in progress finish with the state they
// started with and established connections are never touched.
//
// A Server is safe for concurrent use.
type Server struct {
	cfg   config.ListenerTLS
	alpn  []string
	mesh  Mesh // the proxy's workload identity; nil without one
	base  *tls.Config
	state atomic.Pointer[serverState]

	mu   sync.Mutex                    // serializes loads
	pems map[string]config.Certificate // the named certificates cfg uses
}

// serverState is one loaded set of certificates and CAs.
type serverState struct {
	conf  *tls.Config // returned for every ClientHello
	exact map[string]*entry
	wild  map[string]*entry // by the suffix after "*."
	def   *entry
}

// entry is one certificate and what the identity of a connection that it
// served reports about the proxy's side.
type entry struct {
	cert  *tls.Certificate
	local localIdentity
}

type localIdentity struct {
	subject string
	uris    []string
	dns     []string
}

// NewServer loads the certificates and client CAs of cfg. alpn lists the
// protocols offered, most preferred first. certs are the configuration's
// in-memory certificates, which cfg's entries may name; NewServer keeps
// the ones they do. A listener with cfg.Mesh needs WithMesh.
func NewServer(cfg config.ListenerTLS, alpn []string, certs []config.Certificate, opts ...Option) (*Server, error) {
	s := &Server{cfg: cfg, alpn: alpn, pems: used(cfg, certs), mesh: applyOptions(opts).mesh}
	s.base = &tls.Config{GetConfigForClient: s.configForClient}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// used returns the certificates of certs that cfg names.
func used(cfg config.ListenerTLS, certs []config.Certificate) map[string]config.Certificate {
	m := map[string]config.Certificate{}
	for _, cf := range cfg.Certificates {
		if cf.Certificate == "" {
			continue
		}
		for _, c := range certs {
			if c.Name == cf.Certificate {
				m[c.Name] = c
				break
			}
		}
	}
	return m
}

// SetCertificates serves the in-memory certificates of a new
// configuration, as Reload serves changed files. It does nothing when
// none of the certificates the listener names changed; on error the
// previous state keeps serving.
func (s *Server) SetCertificates(certs []config.Certificate) error {
	next := used(s.cfg, certs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if maps.Equal(next, s.pems) {
		return nil
	}
	st, err := s.load(next)
	if err != nil {
		return err
	}
	s.pems = next
	s.state.Store(st)
	return nil
}

// Config returns the configuration to hand to tls.Server. It is the same
// for the life of s; what it serves follows Reload.
func (s *Server) Config() *tls.Config { return s.base }

// HandshakeTimeout is the bound on one handshake.
func (s *Server) HandshakeTimeout() time.Duration {
	return s.cfg.HandshakeTimeout.Or(DefaultHandshakeTimeout)
}

// ForwardClientCert reports whether the listener sets
// X-Forwarded-Client-Cert from the client's certificate.
func (s *Server) ForwardClientCert() bool {
	return s.cfg.ForwardClientCert == config.ForwardClientCertSanitizeSet
}

// Files returns every file the server reads.
func (s *Server) Files() []string {
	var files []string
	for _, c := range s.cfg.Certificates {
		if c.Certificate == "" {
			files = append(files, c.CertFile, c.KeyFile)
		}
	}
	if s.cfg.ClientCAFile != "" {
		files = append(files, s.cfg.ClientCAFile)
	}
	return files
}

// Reload reads every file again and, when all of them parse, makes them
// the ones served. On error the previous state keeps serving.
func (s *Server) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.load(s.pems)
	if err != nil {
		return err
	}
	s.state.Store(st)
	return nil
}

// Watch reloads the server whenever one of its files changes, until ctx is
// done. failed is called with every reload or watch error.
func (s *Server) Watch(ctx context.Context, failed func(error)) {
	dirs := map[string]bool{}
	for _, f := range s.Files() {
		if dirs[f] {
			continue
		}
		dirs[f] = true
		go func(f string) {
			err := config.WatchFile(ctx, f, 100*time.Millisecond, func() {
				if err := s.Reload(); err != nil {
					failed(err)
				}
			})
			if err != nil {
				failed(err)
			}
		}(f)
	}
}

func (s *Server) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	return s.state.Load().conf, nil
}

func (s *Server) load(pems map[string]config.Certificate) (*serverState, error) {
	st := &serverState{exact: map[string]*entry{}, wild: map[string]*entry{}}
	if s.cfg.Mesh {
		if s.mesh == nil {
			return nil, ErrNoMesh
		}
		st.def = &entry{}
		st.conf = s.meshServerConfig()
		return st, nil
	}
	for i, cf := range s.cfg.Certificates {
		var cert tls.Certificate
		var err error
		if cf.Certificate != "" {
			pem, ok := pems[cf.Certificate]
			if !ok {
				return nil, fmt.Errorf("tls certificates[%d]: no certificate %q", i, cf.Certificate)
			}
			cert, err = tls.X509KeyPair([]byte(pem.CertPEM), []byte(pem.KeyPEM))
		} else {
			cert, err = tls.LoadX509KeyPair(cf.CertFile, cf.KeyFile)
		}
		if err != nil {
			return nil, fmt.Errorf("tls certificates[%d]: %w", i, err)
		}
		leaf := cert.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return nil, fmt.Errorf("tls certificates[%d]: %w", i, err)
			}
			cert.Leaf = leaf
		}
		e := &entry{cert: &cert, local: localIdentity{subject: leaf.Subject.String(), uris: uriStrings(leaf), dns: leaf.DNSNames}}
		if st.def == nil {
			st.def = e
		}
		names := cf.ServerNames
		if len(names) == 0 {
			names = leaf.DNSNames
		}
		for _, n := range names {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			if suffix, ok := strings.CutPrefix(n, "*."); ok {
				if _, dup := st.wild[suffix]; !dup {
					st.wild[suffix] = e
				}
			} else if _, dup := st.exact[n]; !dup {
				st.exact[n] = e
			}
		}
	}
	if st.def == nil {
		return nil, errors.New("tls: no certificate")
	}
	conf := &tls.Config{
		MinVersion: parseVersion(s.cfg.MinVersion, tls.VersionTLS12),
		MaxVersion: parseVersion(s.cfg.MaxVersion, tls.VersionTLS13),
		NextProtos: s.alpn,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return st.lookup(hello.ServerName).cert, nil
		},
	}
	switch s.cfg.EffectiveClientAuth() {
	case config.ClientAuthOptional:
		conf.ClientAuth = tls.VerifyClientCertIfGiven
	case config.ClientAuthRequired:
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if s.cfg.ClientCAFile != "" {
		pool, err := loadPool(s.cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls client_ca_file: %w", err)
		}
		conf.ClientCAs = pool
	}
	st.conf = conf
	return st, nil
}

// lookup returns the certificate for an SNI name: an exact match, else a
// wildcard whose suffix follows the name's first label, else the default.
func (st *serverState) lookup(name string) *entry {
	if name == "" {
		return st.def
	}
	if e := st.exact[name]; e != nil {
		return e
	}
	var lower [253]byte
	if len(name) <= len(lower) {
		// SNI is case-insensitive; most clients send it in lowercase
		// already, in which case this allocates nothing.
		n := copy(lower[:], name)
		changed := false
		for i := 0; i < n; i++ {
			if c := lower[i]; c >= 'A' && c <= 'Z' {
				lower[i] = c + 'a' - 'A'
				changed = true
			}
		}
		if changed {
			name = string(lower[:n])
			if e := st.exact[name]; e != nil {
				return e
			}
		}
	}
	// A wildcard stands for exactly one label, as in certificates.
	if i := strings.IndexByte(name, '.'); i >= 0 {
		if e := st.wild[name[i+1:]]; e != nil {
			return e
		}
	}
	return st.def
}

// certificateFor returns the certificate the current state serves for an
// SNI name.
func (s *Server) certificateFor(name string) *entry {
	return s.state.Load().lookup(name)
}

// local describes the proxy's side of a connection: the certificate
// served for the SNI name, or the workload certificate under mesh.
func (s *Server) local(name string) localIdentity {
	if s.cfg.Mesh && s.mesh != nil {
		c, err := s.mesh.Certificate()
		if err != nil || c.Leaf == nil {
			return localIdentity{}
		}
		return localIdentity{subject: c.Leaf.Subject.String(), uris: uriStrings(c.Leaf), dns: c.Leaf.DNSNames}
	}
	return s.certificateFor(name).local
}

func parseVersion(v string, def uint16) uint16 {
	switch v {
	case "1.2":
		return tls.VersionTLS12
	case "1.3":
		return tls.VersionTLS13
	}
	return def
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return pool, nil
}

func uriStrings(c *x509.Certificate) []string {
	if len(c.URIs) == 0 {
		return nil
	}
	out := make([]string, len(c.URIs))
	for i, u := range c.URIs {
		out[i] = u.String()
	}
	return out
}
