package policy

import (
	"cmp"
	"crypto/x509"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ServiceEntry lets the apps of a namespace, of one service, or of the
// whole mesh (RootNamespace) reach hosts outside the mesh while their
// outbound mode is registry_only, as Istio's ServiceEntry with
// REGISTRY_ONLY: an HTTP call whose Host is one of Hosts (or an address of
// Addresses) is passed on; an intercepted TLS connection whose SNI
// (server name) is one of the hosts, or any connection bound for an
// address of Addresses, is relayed byte for byte. Everything else outside
// the mesh stays refused.
type ServiceEntry struct {
	Name      string `json:"name" yaml:"name"`
	Namespace string `json:"namespace" yaml:"namespace"`
	// Service, when set, narrows it to the sidecars of one service.
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	// Hosts are DNS names ("api.stripe.com"), or "*.example.com" for any
	// name under example.com.
	Hosts []string `json:"hosts,omitempty" yaml:"hosts,omitempty"`
	// Addresses are IP addresses or CIDR blocks ("10.20.0.0/16"): a
	// database outside the mesh, reached by its address whatever it
	// speaks.
	Addresses []string `json:"addresses,omitempty" yaml:"addresses,omitempty"`
	// Ports, when set, are the only ports the hosts may be reached on.
	Ports []int `json:"ports,omitempty" yaml:"ports,omitempty"`
	// TLSOrigination, when set, has the sidecar send the app's plain HTTP
	// calls to the hosts over TLS: the app speaks HTTP, nothing leaves in
	// plain text.
	TLSOrigination *TLSOrigination `json:"tls_origination,omitempty" yaml:"tls_origination,omitempty"`
}

// TLSOrigination is a service entry's TLS toward its hosts, as Istio's
// ServiceEntry targetPort with a DestinationRule's tls: a plain HTTP call
// to a host of the entry on Port leaves as HTTPS to TargetPort, the
// server's certificate checked for the host's name, with or without a
// client certificate (Mode).
type TLSOrigination struct {
	// Port is the port of the app's plain calls; 0 means 80.
	Port int `json:"port,omitempty" yaml:"port,omitempty"`
	// TargetPort is the port the TLS goes to; 0 means 443.
	TargetPort int `json:"target_port,omitempty" yaml:"target_port,omitempty"`
	// CACertificates, PEM, are the roots the server's certificate must
	// chain to; empty means the system's.
	CACertificates string `json:"ca_certificates,omitempty" yaml:"ca_certificates,omitempty"`
	// Mode is the client's side of the TLS: OriginateSimple (""), none;
	// OriginateMutual, the certificate of CertificateFile and
	// PrivateKeyFile; OriginateWorkload, the sidecar's own workload
	// certificate, for a server outside the mesh that trusts the mesh's
	// roots.
	Mode string `json:"mode,omitempty" yaml:"mode,omitempty"`
	// CertificateFile and PrivateKeyFile are PEM files on each sidecar's
	// host, read at each new connection (so a renewed pair is used
	// without a change here), for OriginateMutual.
	CertificateFile string `json:"certificate_file,omitempty" yaml:"certificate_file,omitempty"`
	PrivateKeyFile  string `json:"private_key_file,omitempty" yaml:"private_key_file,omitempty"`
}

// The modes of TLS origination, as Istio's DestinationRule tls modes
// SIMPLE, MUTUAL and ISTIO_MUTUAL.
const (
	OriginateSimple   = "simple"
	OriginateMutual   = "mutual"
	OriginateWorkload = "workload"
)

// Originates returns where a plain HTTP call to host on port leaves over
// TLS ("host:target_port") and the entry's origination, which says how;
// ok is false when the entry does not originate TLS for the call.
func (e *ServiceEntry) Originates(host string, port int) (target string, o *TLSOrigination, ok bool) {
	o = e.TLSOrigination
	if o == nil || port != cmp.Or(o.Port, 80) || !e.Admits(host, port) {
		return "", nil, false
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return "", nil, false // a certificate names a host
	}
	return net.JoinHostPort(host, strconv.Itoa(cmp.Or(o.TargetPort, 443))), o, true
}

// Scope implements the scope of a mesh resource.
func (e *ServiceEntry) Scope() (namespace, service, name string) {
	return e.Namespace, e.Service, e.Name
}

// Normalize spells the hosts in lower case, in place.
func (e *ServiceEntry) Normalize() {
	for i, h := range e.Hosts {
		e.Hosts[i] = strings.TrimSuffix(strings.ToLower(h), ".")
	}
}

// Validate checks one entry on its own; its errors are a config.Errors
// whose paths start inside it ("hosts[0]").
func (e *ServiceEntry) Validate() error {
	c := &checker{}
	checkScope(c, "", e.Name, e.Namespace, e.Service)
	if len(e.Hosts)+len(e.Addresses) == 0 {
		c.add("hosts", "is empty, and so are addresses; name at least one host or address")
	}
	for i, a := range e.Addresses {
		if _, err := parsePrefix(a); err != nil {
			c.add(at("addresses", i), "%q is not an IP address or a CIDR block", a)
		}
	}
	for i, h := range e.Hosts {
		if !hostPattern(h) {
			c.add(at("hosts", i), "%q is not a host name, or *. and a domain", h)
		}
	}
	for i, p := range e.Ports {
		if p < 1 || p > 65535 {
			c.add(at("ports", i), "%d is not a port", p)
		}
	}
	if o := e.TLSOrigination; o != nil {
		if len(e.Hosts) == 0 {
			c.add("tls_origination", "needs hosts: the server's certificate is checked for a host's name")
		}
		for _, p := range []struct {
			name string
			v    int
		}{{"port", o.Port}, {"target_port", o.TargetPort}} {
			if p.v < 0 || p.v > 65535 {
				c.add("tls_origination."+p.name, "%d is not a port", p.v)
			}
		}
		if len(e.Ports) > 0 && !slices.Contains(e.Ports, cmp.Or(o.Port, 80)) {
			c.add("tls_origination.port", "%d is not one of ports", cmp.Or(o.Port, 80))
		}
		if o.CACertificates != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(o.CACertificates)) {
			c.add("tls_origination.ca_certificates", "holds no PEM certificate")
		}
		files := map[string]string{"certificate_file": o.CertificateFile, "private_key_file": o.PrivateKeyFile}
		switch o.Mode {
		case "", OriginateSimple, OriginateWorkload:
			for _, name := range []string{"certificate_file", "private_key_file"} {
				if files[name] != "" {
					c.add("tls_origination."+name, "is for mode %s only", OriginateMutual)
				}
			}
		case OriginateMutual:
			for _, name := range []string{"certificate_file", "private_key_file"} {
				switch f := files[name]; {
				case f == "":
					c.add("tls_origination."+name, "is empty: mode %s needs the client's certificate and key", OriginateMutual)
				case !filepath.IsAbs(f):
					c.add("tls_origination."+name, "%q is not an absolute path", f)
				}
			}
		default:
			c.add("tls_origination.mode", "%q is not %s, %s or %s", o.Mode, OriginateSimple, OriginateMutual, OriginateWorkload)
		}
	}
	return c.err()
}

// hostPattern reports whether h is a DNS name, or "*." and one.
func hostPattern(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// parsePrefix reads an IP address (a block of one) or a CIDR block.
func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}

// AdmitsAddr reports whether the entry lets a connection to addr, on port
// (0: any), out.
func (e *ServiceEntry) AdmitsAddr(addr netip.Addr, port int) bool {
	if len(e.Ports) > 0 && port != 0 && !slices.Contains(e.Ports, port) {
		return false
	}
	addr = addr.Unmap()
	for _, a := range e.Addresses {
		if p, err := parsePrefix(a); err == nil && p.Contains(addr) {
			return true
		}
	}
	return false
}

// Admits reports whether the entry lets host, on port (0: any), out: a
// name of its hosts, or an address of its addresses.
func (e *ServiceEntry) Admits(host string, port int) bool {
	if len(e.Ports) > 0 && port != 0 && !slices.Contains(e.Ports, port) {
		return false
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return e.AdmitsAddr(a, port)
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, h := range e.Hosts {
		if suffix, ok := strings.CutPrefix(h, "*"); ok {
			if len(host) > len(suffix) && strings.HasSuffix(host, suffix) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

// AnyAdmits reports whether one of entries lets host, on port (0: any),
// out.
func AnyAdmits(entries []ServiceEntry, host string, port int) bool {
	return slices.ContainsFunc(entries, func(e ServiceEntry) bool { return e.Admits(host, port) })
}

// AnyAdmitsAddr reports whether one of entries lets a connection to addr,
// on port (0: any), out.
func AnyAdmitsAddr(entries []ServiceEntry, addr netip.Addr, port int) bool {
	return slices.ContainsFunc(entries, func(e ServiceEntry) bool { return e.AdmitsAddr(addr, port) })
}

// EntriesFor returns the entries of list that apply to the sidecars of
// the service, by name. Invalid ones are left out.
func EntriesFor(list []ServiceEntry, namespace, service string) []ServiceEntry {
	var out []ServiceEntry
	for _, e := range list {
		e.Normalize()
		if e.Validate() != nil {
			continue
		}
		if appliesTo(e.Namespace, e.Service, namespace, service) {
			out = append(out, e)
		}
	}
	return out
}
