// Package redact takes the secrets out of a configuration before it is
// shown: private keys, credentials in header values and header matchers,
// and secrets in plugin configuration. It is the one implementation that
// every page showing a configuration uses: the proxy's /config and the
// control plane's API.
//
// A secret is recognised by where it sits (a certificate's key_pem), by
// the name it is given (a header or a plugin configuration key that names
// a credential: authorization, cookie, token, secret, password, key...),
// or by how it looks (a PEM private key, a bearer or basic credential, a
// JSON Web Token). The rule errs on the side of hiding: a value that is
// only named like a secret is hidden too.
package redact

import (
	"encoding/json"
	"strings"

	"github.com/wasmgate/wasmgate/config"
)

// Marker is what a redacted value reads.
const Marker = "REDACTED"

// Config returns a copy of c with every secret replaced by Marker. c is
// not changed; the copy shares the parts that hold no secret.
func Config(c *config.Config) *config.Config {
	if c == nil {
		return nil
	}
	out := *c
	out.Certificates = make([]config.Certificate, len(c.Certificates))
	for i, cert := range c.Certificates {
		out.Certificates[i] = Certificate(cert)
	}
	out.VirtualHosts = make([]config.VirtualHost, len(c.VirtualHosts))
	for i := range c.VirtualHosts {
		out.VirtualHosts[i] = VirtualHost(c.VirtualHosts[i])
	}
	out.Plugins = make([]config.Plugin, len(c.Plugins))
	for i, p := range c.Plugins {
		out.Plugins[i] = Plugin(p)
	}
	if c.Certificates == nil {
		out.Certificates = nil
	}
	if c.VirtualHosts == nil {
		out.VirtualHosts = nil
	}
	if c.Plugins == nil {
		out.Plugins = nil
	}
	return &out
}

// Certificate returns c with its private key replaced by Marker.
func Certificate(c config.Certificate) config.Certificate {
	if c.KeyPEM != "" {
		c.KeyPEM = Marker
	}
	return c
}

// VirtualHost returns v with the secrets of its header mutations, header
// matchers, direct responses and filter configurations redacted.
func VirtualHost(v config.VirtualHost) config.VirtualHost {
	v.RequestHeaders = mutation(v.RequestHeaders)
	v.ResponseHeaders = mutation(v.ResponseHeaders)
	v.Filters = filters(v.Filters)
	if v.Routes != nil {
		routes := make([]config.Route, len(v.Routes))
		for i, r := range v.Routes {
			routes[i] = route(r)
		}
		v.Routes = routes
	}
	return v
}

// Plugin returns p with the secrets of its configurations redacted.
func Plugin(p config.Plugin) config.Plugin {
	p.Config = Raw(p.Config)
	p.VMConfig = Raw(p.VMConfig)
	return p
}

// Resource returns v, a resource as the control plane stores it (a
// pointer to a configuration type), redacted; other values are returned
// as they are.
func Resource(v any) any {
	switch r := v.(type) {
	case *config.Certificate:
		c := Certificate(*r)
		return &c
	case *config.VirtualHost:
		vh := VirtualHost(*r)
		return &vh
	case *config.Plugin:
		p := Plugin(*r)
		return &p
	}
	return v
}

func route(r config.Route) config.Route {
	r.RequestHeaders = mutation(r.RequestHeaders)
	r.ResponseHeaders = mutation(r.ResponseHeaders)
	r.Filters = filters(r.Filters)
	if r.DirectResponse != nil {
		d := *r.DirectResponse
		d.Headers = headers(d.Headers)
		r.DirectResponse = &d
	}
	if r.Match.Headers != nil {
		ms := make([]config.HeaderMatcher, len(r.Match.Headers))
		for i, m := range r.Match.Headers {
			if sensitiveName(m.Name) || looksSecret(m.Exact) || looksSecret(m.Prefix) {
				m.Exact, m.Prefix, m.Regex = hide(m.Exact), hide(m.Prefix), hide(m.Regex)
			}
			ms[i] = m
		}
		r.Match.Headers = ms
	}
	return r
}

func mutation(m config.HeaderMutation) config.HeaderMutation {
	m.Add = headers(m.Add)
	m.Set = headers(m.Set)
	return m
}

func headers(hs []config.Header) []config.Header {
	if hs == nil {
		return nil
	}
	out := make([]config.Header, len(hs))
	for i, h := range hs {
		h.Value = Header(h.Name, h.Value)
		out[i] = h
	}
	return out
}

func filters(fs []config.FilterRef) []config.FilterRef {
	if fs == nil {
		return nil
	}
	out := make([]config.FilterRef, len(fs))
	for i, f := range fs {
		f.Config = Raw(f.Config)
		out[i] = f
	}
	return out
}

// Header returns value, or Marker when the header's name or its value
// says it is a credential.
func Header(name, value string) string {
	if value != "" && (sensitiveName(name) || looksSecret(value)) {
		return Marker
	}
	return value
}

// Raw redacts a plugin's configuration. A JSON document keeps its shape,
// with the values of sensitive keys and the strings that look secret
// replaced by Marker; other text is replaced whole when it holds anything
// that looks secret or names a credential.
func Raw(r config.RawConfig) config.RawConfig {
	if len(r) == 0 {
		return r
	}
	var doc any
	if err := json.Unmarshal(r, &doc); err == nil {
		if _, isString := doc.(string); !isString {
			b, err := json.Marshal(redactJSON(doc))
			if err != nil {
				return config.RawConfig(Marker)
			}
			return b
		}
	}
	s := string(r)
	if looksSecret(s) || mentionsSecret(s) {
		return config.RawConfig(Marker)
	}
	return r
}

func redactJSON(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if sensitiveName(k) {
				if val != nil {
					t[k] = Marker
				}
				continue
			}
			t[k] = redactJSON(val)
		}
		return t
	case []any:
		for i := range t {
			t[i] = redactJSON(t[i])
		}
		return t
	case string:
		if looksSecret(t) {
			return Marker
		}
	}
	return v
}

func hide(s string) string {
	if s == "" {
		return s
	}
	return Marker
}

// sensitiveWords are parts of names that call a value a credential.
var sensitiveWords = []string{
	"auth", "cookie", "token", "secret", "password", "passwd", "passphrase",
	"credential", "key", "private", "session", "signature", "jwk", "hmac", "bearer",
}

// sensitiveName reports whether a header or configuration key names a
// credential: Authorization, Cookie, X-Api-Key, jwt_secret, client_key...
func sensitiveName(name string) bool {
	n := strings.ToLower(name)
	for _, w := range sensitiveWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// mentionsSecret reports whether free text assigns a value to a sensitive
// name ("token=...", "password: ...").
func mentionsSecret(s string) bool {
	low := strings.ToLower(s)
	for _, w := range sensitiveWords {
		for i := 0; ; {
			j := strings.Index(low[i:], w)
			if j < 0 {
				break
			}
			rest := strings.TrimLeft(low[i+j+len(w):], "_-abcdefghijklmnopqrstuvwxyz0123456789 \t\"'")
			if strings.HasPrefix(rest, "=") || strings.HasPrefix(rest, ":") {
				return true
			}
			i += j + len(w)
		}
	}
	return false
}

// looksSecret reports whether a value has the shape of a credential: a
// PEM private key, a bearer or basic credential, a JSON Web Token.
func looksSecret(v string) bool {
	if strings.Contains(v, "PRIVATE KEY") {
		return true
	}
	low := strings.ToLower(strings.TrimSpace(v))
	if strings.HasPrefix(low, "bearer ") || strings.HasPrefix(low, "basic ") {
		return true
	}
	return strings.HasPrefix(v, "eyJ") && strings.Count(v, ".") == 2
}
