package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/wasmgate/wasmgate/config"
)

// ClientConfig returns the TLS configuration for connections to addr, an
// endpoint of a cluster with settings t and the given protocol
// (config.ProtocolHTTP1 or config.ProtocolHTTP2). A cluster with t.Mesh
// needs WithMesh.
func ClientConfig(t *config.ClusterTLS, addr, protocol string, opts ...Option) (*tls.Config, error) {
	conf := &tls.Config{
		MinVersion:         parseVersion(t.MinVersion, tls.VersionTLS12),
		InsecureSkipVerify: t.InsecureSkipVerify,
		NextProtos:         t.ALPN,
		ServerName:         t.SNI,
	}
	if len(conf.NextProtos) == 0 {
		if protocol == config.ProtocolHTTP2 {
			conf.NextProtos = []string{"h2"}
		} else {
			conf.NextProtos = []string{"http/1.1"}
		}
	}
	if conf.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		// For an IP address, crypto/tls sends no SNI and verifies the
		// certificate's IP SANs.
		conf.ServerName = host
	}
	if t.Mesh {
		return meshClientConfig(applyOptions(opts).mesh, t.ExpectedIdentities, conf)
	}
	if t.CAFile != "" && !t.InsecureSkipVerify {
		ca := sourceFor("ca", t.CAFile, "", loadCA)
		if _, err := ca.get(); err != nil {
			return nil, fmt.Errorf("tls ca_file: %w", err)
		}
		// crypto/tls verifies against a pool fixed in the config; the
		// pool of the file as it is now is checked here instead.
		name := conf.ServerName
		conf.InsecureSkipVerify = true
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			return verify(cs, name, ca)
		}
	}
	if t.CertFile != "" {
		pair := sourceFor("pair", t.CertFile, t.KeyFile, loadKeyPair)
		if _, err := pair.get(); err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			v, err := pair.get()
			if err != nil {
				return nil, err
			}
			return v.(*tls.Certificate), nil
		}
	}
	return conf, nil
}

// verify checks the server's chain against the CA file's current pool and
// name, as crypto/tls does with RootCAs.
func verify(cs tls.ConnectionState, name string, ca *fileSource) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server sent no certificate")
	}
	v, err := ca.get()
	if err != nil {
		return err
	}
	opts := x509.VerifyOptions{Roots: v.(*x509.CertPool), DNSName: name, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err = cs.PeerCertificates[0].Verify(opts)
	return err
}

// The files a cluster's TLS settings name are read when a configuration is
// built, and read again by the connections that follow when they change
// on disk (their size or modification time, looked at once a second at
// most), so that rotated certificates (cert-manager, Vault, SPIFFE
// helpers) reach new upstream connections without a configuration change:
// the pools of an unchanged cluster outlive reloads. A file that cannot be
// read, or a key that does not match its certificate (a rotation written
// halfway), keeps the previous value until it can.

// statEvery is how often a source looks at its files.
var statEvery = time.Second

// fileSource is a value read from one or two files.
type fileSource struct {
	files [2]string
	load  func(a, b string) (any, error)

	mu     sync.Mutex
	next   time.Time // the next look at the files
	stamps [2]stamp
	val    any
}

// stamp tells a file's versions apart. The inode is in it because a
// rotation that renames a new file into place can keep the size, and the
// modification time, kept at the kernel's clock tick, can be the same too.
type stamp struct {
	size int64
	mod  time.Time
	ino  uint64
}

// sources holds one fileSource per file pair and kind, shared by every
// endpoint and configuration that names them.
var sources sync.Map

type sourceKey struct{ kind, a, b string }

// sourceFor returns the source of kind ("ca" or "pair") for files a and b.
func sourceFor(kind, a, b string, load func(a, b string) (any, error)) *fileSource {
	k := sourceKey{kind, a, b}
	if s, ok := sources.Load(k); ok {
		return s.(*fileSource)
	}
	s, _ := sources.LoadOrStore(k, &fileSource{files: [2]string{a, b}, load: load})
	return s.(*fileSource)
}

// get returns the value as the files are now, or the last value read when
// they cannot be read or loaded.
func (s *fileSource) get() (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.val != nil && now.Before(s.next) {
		return s.val, nil
	}
	s.next = now.Add(statEvery)
	var st [2]stamp
	for i, f := range s.files {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			st[i] = stamp{fi.Size(), fi.ModTime(), inode(fi)}
		}
	}
	if s.val != nil && st == s.stamps {
		return s.val, nil
	}
	v, err := s.load(s.files[0], s.files[1])
	if err != nil {
		if s.val != nil {
			return s.val, nil
		}
		return nil, err
	}
	s.val, s.stamps = v, st
	return v, nil
}

func loadCA(file, _ string) (any, error) { return loadPool(file) }

func loadKeyPair(cert, key string) (any, error) {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	return &pair, nil
}
