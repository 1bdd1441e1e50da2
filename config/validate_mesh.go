package config

import (
	"net/url"
	"strings"
)

// validateMeshListenerTLS checks that a mesh listener names no other
// source of certificates or client CAs.
func validateMeshListenerTLS(v *errs, p string, t *ListenerTLS) {
	if len(t.Certificates) > 0 {
		v.add(dot(p, "certificates"), "must be empty with mesh: true (the proxy's workload certificate is served)")
	}
	if t.ClientCAFile != "" {
		v.add(dot(p, "client_ca_file"), "must be empty with mesh: true (clients are verified against the mesh's trust bundle)")
	}
	if t.ClientAuth != "" && t.ClientAuth != ClientAuthRequired {
		v.add(dot(p, "client_auth"), "must be required or empty with mesh: true")
	}
}

// validateMeshClusterTLS checks the mesh settings of a cluster.
func validateMeshClusterTLS(v *errs, p string, t *ClusterTLS) {
	if !t.Mesh {
		if len(t.ExpectedIdentities) > 0 {
			v.add(dot(p, "expected_identities"), "needs mesh: true")
		}
		return
	}
	if t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" {
		v.add(p, "ca_file, cert_file and key_file must be empty with mesh: true (the workload certificate and trust bundle are used)")
	}
	if t.InsecureSkipVerify {
		v.add(dot(p, "insecure_skip_verify_i_know_what_i_am_doing"), "cannot be set with mesh: true")
	}
	for i, id := range t.ExpectedIdentities {
		if msg := checkSPIFFEID(id); msg != "" {
			v.add(idx(dot(p, "expected_identities"), i), "%s", msg)
		}
	}
}

// checkSPIFFEID checks the form spiffe://<trust-domain>/<path>.
func checkSPIFFEID(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "\"" + s + "\" is not a URI"
	case u.Scheme != "spiffe":
		return "\"" + s + "\" is not a SPIFFE ID (want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)"
	case u.Host == "" || u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "":
		return "\"" + s + "\" has no trust domain, or a user, port, query or fragment"
	case u.Path == "" || strings.HasSuffix(u.Path, "/") || strings.Contains(u.Path, "//"):
		return "\"" + s + "\" has an empty path or path segment"
	case strings.ToLower(u.Host) != u.Host:
		return "\"" + s + "\": the trust domain must be lowercase"
	}
	return ""
}
