package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/controlplane/ca"
)

// BundleFile is the name, in DataDir, of the trust bundle the control
// plane keeps written for the CLI and for proxies to bootstrap with.
const BundleFile = "trust-bundle.pem"

// startCA opens or creates the CA and keeps DataDir/trust-bundle.pem up
// to date with its bundle.
func (s *Server) startCA(ctx context.Context) error {
	o := s.opts
	if o.SecretKey == nil {
		return fmt.Errorf("the mesh needs a secret key to keep the CA's key sealed in etcd (--secret-key-file)")
	}
	c, err := ca.New(ctx, s.Client, ca.Options{Prefix: s.Store.Keys().Prefix(), TrustDomain: o.TrustDomain, SecretKey: o.SecretKey,
		Lifetime: o.CertificateLifetime, AllowShortLifetimes: o.AllowShortLifetimes, Authority: o.CAAuthority, Logger: o.Logger.Named("ca")})
	if err != nil {
		return err
	}
	s.CA = c
	b, err := c.Bundle(ctx)
	if err != nil {
		return err
	}
	if err := s.writeBundle(b); err != nil {
		return err
	}
	bctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.followBundle(bctx, b.Revision)
	o.Logger.Info("mesh certificate authority serving", zap.String("trust_domain", c.TrustDomain().Name()),
		zap.String("bundle_file", s.BundlePath()), zap.Duration("certificate_lifetime", c.Lifetime()))
	return nil
}

// BundlePath is the file the control plane keeps the trust bundle in.
func (s *Server) BundlePath() string { return filepath.Join(s.opts.DataDir, BundleFile) }

func (s *Server) writeBundle(b ca.Bundle) error {
	if err := os.MkdirAll(s.opts.DataDir, 0o700); err != nil {
		return err
	}
	tmp := s.BundlePath() + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.RootsPEM), 0o644); err != nil {
		return fmt.Errorf("writing the trust bundle: %w", err)
	}
	return os.Rename(tmp, s.BundlePath())
}

// followBundle rewrites the bundle file whenever the bundle changes.
func (s *Server) followBundle(ctx context.Context, rev int64) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		b, err := s.CA.WaitBundle(wctx, rev)
		cancel()
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if b.Revision > rev {
			if err := s.writeBundle(b); err != nil {
				s.opts.Logger.Warn("trust bundle file", zap.Error(err))
			}
			rev = b.Revision
		}
	}
}

// meshAPITLS serves the API with a certificate from the CA. A client
// certificate is asked for but not required: the identity endpoints
// verify it against the current bundle themselves, and bearer tokens
// authenticate the rest.
func (s *Server) meshAPITLS(addr net.Addr) *tls.Config {
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, s.opts.APIHosts...)
	if ta, ok := addr.(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		hosts = append(hosts, ta.IP.String())
	}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.CA.ServingCertificates(hosts),
		ClientAuth:     tls.RequestClientCert,
	}
}
