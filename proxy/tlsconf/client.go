package tlsconf

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/wasmgate/wasmgate/config"
)

// ClientConfig returns the TLS configuration for connections to addr, an
// endpoint of a cluster with settings t and the given protocol
// (config.ProtocolHTTP1 or config.ProtocolHTTP2).
func ClientConfig(t *config.ClusterTLS, addr, protocol string) (*tls.Config, error) {
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
	if t.CAFile != "" {
		pool, err := loadPool(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca_file: %w", err)
		}
		conf.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}
