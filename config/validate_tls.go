package config

import (
	"crypto/tls"
	"strings"
)

// validateProtocols checks the TLS, HTTP/2 and HTTP/3 settings of the
// listeners and the TLS and protocol of the clusters. Files are not opened
// here: a configuration may be validated away from the proxy that runs it.
func (c *Config) validateProtocols(v *errs) {
	certs := c.validateCertificates(v)
	for i := range c.Listeners {
		l := &c.Listeners[i]
		p := idx("listeners", i)
		if l.TLS != nil {
			validateListenerTLS(v, dot(p, "tls"), l.TLS, certs)
		}
		if h := l.HTTP2; h != nil {
			hp := dot(p, "http2")
			if h.H2C && l.TLS != nil {
				v.add(dot(hp, "h2c"), "is for listeners without tls; a tls listener offers h2 by ALPN")
			}
			if h.H2C && h.Disabled {
				v.add(hp, "at most one of disabled and h2c")
			}
			if h.MaxConcurrentStreams > 1<<20 {
				v.add(dot(hp, "max_concurrent_streams"), "must be at most 1048576")
			}
			if h.InitialStreamWindow < 0 || h.InitialStreamWindow > 0 && h.InitialStreamWindow < 65535 {
				v.add(dot(hp, "initial_stream_window"), "must be between 65535 and 2147483647")
			}
			if h.InitialConnectionWindow < 0 || h.InitialConnectionWindow > 0 && h.InitialConnectionWindow < 65535 {
				v.add(dot(hp, "initial_connection_window"), "must be between 65535 and 2147483647")
			}
			if h.MaxReadFrameSize != 0 && (h.MaxReadFrameSize < 16384 || h.MaxReadFrameSize > 16777215) {
				v.add(dot(hp, "max_read_frame_size"), "must be between 16384 and 16777215")
			}
		}
		if h := l.HTTP3; h != nil {
			hp := dot(p, "http3")
			if h.Enabled && l.TLS == nil {
				v.add(dot(hp, "enabled"), "HTTP/3 needs tls on the listener")
			}
			if h.Enabled && l.TLS != nil && l.TLS.MaxVersion == "1.2" {
				v.add(dot(hp, "enabled"), "HTTP/3 needs TLS 1.3, but tls.max_version is 1.2")
			}
			if h.MaxConcurrentStreams < 0 || h.MaxConcurrentStreams > 1<<20 {
				v.add(dot(hp, "max_concurrent_streams"), "must be between 1 and 1048576")
			}
			if h.AltSvcMaxAge < 0 {
				v.add(dot(hp, "alt_svc_max_age"), "must not be negative")
			}
		}
	}
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		p := idx("clusters", i)
		switch cl.Protocol {
		case "", ProtocolHTTP1, ProtocolHTTP2, ProtocolDownstream:
		default:
			v.add(dot(p, "protocol"), "unknown protocol %q (want http1, http2 or downstream)", cl.Protocol)
		}
		if cl.TLS != nil {
			validateClusterTLS(v, dot(p, "tls"), cl.TLS)
			if cl.Protocol == ProtocolDownstream && len(cl.TLS.ALPN) > 0 {
				v.add(dot(dot(p, "tls"), "alpn"), "must be empty with protocol downstream: each request's protocol chooses it")
			}
		}
	}
}

// validateCertificates checks the top-level certificates and returns the
// index of each by name.
func (c *Config) validateCertificates(v *errs) map[string]int {
	seen := map[string]int{}
	for i, cert := range c.Certificates {
		p := idx("certificates", i)
		checkName(v, dot(p, "name"), cert.Name, i, seen, "certificate")
		switch {
		case cert.CertPEM == "":
			v.add(dot(p, "cert_pem"), "is required")
		case cert.KeyPEM == "":
			v.add(dot(p, "key_pem"), "is required")
		default:
			if _, err := tls.X509KeyPair([]byte(cert.CertPEM), []byte(cert.KeyPEM)); err != nil {
				v.add(p, "cert_pem and key_pem are not a key pair: %v", err)
			}
		}
	}
	return seen
}

func validateListenerTLS(v *errs, p string, t *ListenerTLS, certs map[string]int) {
	if t.Permissive && !t.Mesh {
		v.add(dot(p, "permissive"), "needs mesh: true")
	}
	if t.Mesh {
		validateMeshListenerTLS(v, p, t)
	} else if len(t.Certificates) == 0 {
		v.add(dot(p, "certificates"), "at least one certificate is required")
	}
	names := map[string]int{}
	for i, cf := range t.Certificates {
		cp := idx(dot(p, "certificates"), i)
		if cf.Certificate != "" {
			if cf.CertFile != "" || cf.KeyFile != "" {
				v.add(cp, "either certificate or cert_file and key_file, not both")
			}
			if _, ok := certs[cf.Certificate]; !ok {
				v.add(dot(cp, "certificate"), "unknown certificate %q", cf.Certificate)
			}
		} else {
			checkFile(v, dot(cp, "cert_file"), cf.CertFile)
			checkFile(v, dot(cp, "key_file"), cf.KeyFile)
		}
		for j, n := range cf.ServerNames {
			np := idx(dot(cp, "server_names"), j)
			if msg := checkServerName(n); msg != "" {
				v.add(np, "%s", msg)
				continue
			}
			key := strings.ToLower(n)
			if first, dup := names[key]; dup {
				v.add(np, "server name %q is already served by certificates[%d]", n, first)
				continue
			}
			names[key] = i
		}
	}
	checkTLSVersion(v, dot(p, "min_version"), t.MinVersion)
	checkTLSVersion(v, dot(p, "max_version"), t.MaxVersion)
	if t.MinVersion == "1.3" && t.MaxVersion == "1.2" {
		v.add(dot(p, "max_version"), "is below min_version")
	}
	switch t.ClientAuth {
	case "", ClientAuthNone:
	case ClientAuthOptional, ClientAuthRequired:
		if t.ClientCAFile == "" {
			v.add(dot(p, "client_ca_file"), "is required with client_auth %s", t.ClientAuth)
		}
	default:
		v.add(dot(p, "client_auth"), "unknown mode %q (want none, optional or required)", t.ClientAuth)
	}
	if t.ClientCAFile != "" {
		checkFile(v, dot(p, "client_ca_file"), t.ClientCAFile)
	}
	switch t.ForwardClientCert {
	case "", ForwardClientCertSanitize, ForwardClientCertSanitizeSet:
	default:
		v.add(dot(p, "forward_client_cert"), "unknown mode %q (want sanitize or sanitize_set)", t.ForwardClientCert)
	}
	if t.HandshakeTimeout < 0 {
		v.add(dot(p, "handshake_timeout"), "must not be negative")
	}
}

func validateClusterTLS(v *errs, p string, t *ClusterTLS) {
	validateMeshClusterTLS(v, p, t)
	if t.CAFile != "" {
		checkFile(v, dot(p, "ca_file"), t.CAFile)
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add(p, "cert_file and key_file go together")
	}
	if t.CertFile != "" && t.KeyFile != "" {
		checkFile(v, dot(p, "cert_file"), t.CertFile)
		checkFile(v, dot(p, "key_file"), t.KeyFile)
	}
	if t.SNI != "" {
		if msg := checkServerName(t.SNI); msg != "" || strings.HasPrefix(t.SNI, "*") {
			v.add(dot(p, "sni"), "%q is not a server name", t.SNI)
		}
	}
	for i, a := range t.ALPN {
		if a == "" || len(a) > 255 {
			v.add(idx(dot(p, "alpn"), i), "must be 1 to 255 bytes")
		}
	}
	checkTLSVersion(v, dot(p, "min_version"), t.MinVersion)
}

func checkTLSVersion(v *errs, p, ver string) {
	switch ver {
	case "", "1.2", "1.3":
	default:
		v.add(p, "unknown TLS version %q (want 1.2 or 1.3)", ver)
	}
}

func checkFile(v *errs, p, path string) {
	switch {
	case path == "":
		v.add(p, "is required")
	case strings.ContainsRune(path, 0):
		v.add(p, "must not contain NUL")
	}
}

// checkServerName checks an SNI name: a DNS name, or "*." and a DNS name.
func checkServerName(n string) string {
	name := strings.TrimPrefix(n, "*.")
	if name == "" || len(name) > 253 {
		return "must be a DNS name of 1 to 253 characters"
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return "\"" + n + "\" has an empty or too long label"
		}
		for j := 0; j < len(label); j++ {
			ch := label[j]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
				return "\"" + n + "\" is not a DNS name (a wildcard may only be a leading \"*.\")"
			}
		}
	}
	return ""
}
