// Package encryption is wasmgate's encryption policy plugin: it requires
// TLS or mTLS, a minimum TLS version and allowed SPIFFE peers on the
// routes it matches, adds HSTS, encrypts named request headers with
// AES-256-GCM before they go upstream (and decrypts named response
// headers on the way back), and names the headers logs must redact.
//
// The module encryption.wasm beside this file is built from ./module;
// ../firstparty holds it with the other first-party filters.
package encryption

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/wasmgate/wasmgate/sdk"
)

// Config is the plugin's configuration.
type Config struct {
	// Policies are matched in order against the request; the first match
	// applies. A request no policy matches gets Default, when set.
	Policies []Policy `json:"policies"`
	Default  *Policy  `json:"default"`
	// HSTS is added to responses sent over TLS; nil adds none.
	HSTS *HSTS `json:"hsts"`
	// Keys are AES-256 keys by id, each 32 bytes in standard base64.
	// ActiveKey encrypts; every key decrypts.
	Keys      map[string]string `json:"keys"`
	ActiveKey string            `json:"active_key"`
	// EncryptHeaders are request headers encrypted before they go
	// upstream; DecryptHeaders are response headers decrypted before
	// they go downstream.
	EncryptHeaders []string `json:"encrypt_headers"`
	DecryptHeaders []string `json:"decrypt_headers"`
	// RedactHeaders are headers whose values must not be logged: the
	// plugin publishes them in the filter state wasm.encryption.redact.
	RedactHeaders []string `json:"redact_headers"`
}

// Policy is what a matching request's connection must satisfy.
type Policy struct {
	Name string `json:"name"`
	// Match: every condition set must hold. PathPrefix matches the path;
	// Routes the route's name.
	PathPrefix string   `json:"path_prefix"`
	Routes     []string `json:"routes"`
	// Require is "none", "tls" or "mtls" (a verified client certificate).
	Require string `json:"require"`
	// MinTLSVersion is "TLSv1.2" or "TLSv1.3"; "" accepts any TLS.
	MinTLSVersion string `json:"min_tls_version"`
	// AllowedSPIFFEIDs (exact, or a prefix ending in "*") and
	// AllowedTrustDomains restrict mTLS peers; with both empty, any
	// verified peer passes.
	AllowedSPIFFEIDs    []string `json:"allowed_spiffe_ids"`
	AllowedTrustDomains []string `json:"allowed_trust_domains"`
}

// HSTS is the Strict-Transport-Security header.
type HSTS struct {
	MaxAge            int  `json:"max_age"` // seconds; 0 means one year
	IncludeSubdomains bool `json:"include_subdomains"`
	Preload           bool `json:"preload"`
}

type encryption struct {
	sdk.BaseFilter
	cfg    Config
	hsts   string
	keys   *keyring
	redact []byte
	encAAD [][]byte // EncryptHeaders' lower-case names, the AEAD's additional data
	sealed []byte   // the sealed value being set

	rejected, encrypted, decrypted, decryptFailed sdk.Counter
}

// RootID is the root_id that selects this filter in a module holding
// several (../firstparty).
const RootID = "encryption"

// New builds the filter of one configuration: the function the module
// registers with the SDK.
func New(config []byte) (sdk.Filter, error) { return newFilter(config) }

func newFilter(raw []byte) (sdk.Filter, error) {
	var c Config
	if len(raw) > 0 {
		d := json.NewDecoder(strings.NewReader(string(raw)))
		d.DisallowUnknownFields()
		if err := d.Decode(&c); err != nil {
			return nil, fmt.Errorf("encryption config: %w", err)
		}
	}
	f := &encryption{cfg: c}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("encryption config: %w", err)
	}
	f.rejected = sdk.Metrics.Counter("encryption.rejected")
	f.encrypted = sdk.Metrics.Counter("encryption.headers_encrypted")
	f.decrypted = sdk.Metrics.Counter("encryption.headers_decrypted")
	f.decryptFailed = sdk.Metrics.Counter("encryption.decrypt_failed")
	return f, nil
}

func (f *encryption) validate() error {
	c := &f.cfg
	check := func(field string, p *Policy) error {
		switch p.Require {
		case "", "none", "tls", "mtls":
		default:
			return fmt.Errorf("%s.require: %q is not none, tls or mtls", field, p.Require)
		}
		if p.MinTLSVersion != "" && tlsRank(p.MinTLSVersion) == 0 {
			return fmt.Errorf("%s.min_tls_version: %q is not TLSv1.0..TLSv1.3", field, p.MinTLSVersion)
		}
		if (len(p.AllowedSPIFFEIDs) > 0 || len(p.AllowedTrustDomains) > 0) && p.Require != "mtls" {
			return fmt.Errorf("%s: allowed peers need require: mtls", field)
		}
		return nil
	}
	for i := range c.Policies {
		p := &c.Policies[i]
		if p.Name == "" {
			p.Name = fmt.Sprintf("policies[%d]", i)
		}
		if err := check(fmt.Sprintf("policies[%d]", i), p); err != nil {
			return err
		}
	}
	if c.Default != nil {
		if c.Default.Name == "" {
			c.Default.Name = "default"
		}
		if err := check("default", c.Default); err != nil {
			return err
		}
	}
	if h := c.HSTS; h != nil {
		age := h.MaxAge
		if age == 0 {
			age = 31536000
		}
		f.hsts = "max-age=" + strconv.Itoa(age)
		if h.IncludeSubdomains {
			f.hsts += "; includeSubDomains"
		}
		if h.Preload {
			f.hsts += "; preload"
		}
	}
	if len(c.Keys) > 0 || len(c.EncryptHeaders) > 0 || len(c.DecryptHeaders) > 0 {
		kr, err := newKeyring(c.Keys, c.ActiveKey)
		if err != nil {
			return err
		}
		if len(c.EncryptHeaders) > 0 && kr.active == nil {
			return errors.New("active_key: required to encrypt headers")
		}
		f.keys = kr
	}
	for _, h := range c.EncryptHeaders {
		f.encAAD = append(f.encAAD, []byte(strings.ToLower(h)))
	}
	if len(c.RedactHeaders) > 0 {
		names := make([]string, len(c.RedactHeaders))
		for i, h := range c.RedactHeaders {
			names[i] = strings.ToLower(h)
		}
		f.redact = []byte(strings.Join(names, ","))
	}
	return nil
}

func tlsRank(v string) int {
	switch v {
	case "TLSv1", "TLSv1.0":
		return 1
	case "TLSv1.1":
		return 2
	case "TLSv1.2":
		return 3
	case "TLSv1.3":
		return 4
	}
	return 0
}

// match returns the policy of the request, or nil. It reads the path
// and the route from the host only when a policy needs them.
func (f *encryption) match(r *sdk.Request) *Policy {
	path, route := "", ""
	havePath := false
	for i := range f.cfg.Policies {
		p := &f.cfg.Policies[i]
		if p.PathPrefix != "" {
			if !havePath {
				path, havePath = r.Path(), true
			}
			if !strings.HasPrefix(path, p.PathPrefix) {
				continue
			}
		}
		if len(p.Routes) > 0 {
			if route == "" {
				route, _ = sdk.PropertyString("route_name")
			}
			found := false
			for _, r := range p.Routes {
				found = found || r == route
			}
			if !found {
				continue
			}
		}
		return p
	}
	return f.cfg.Default
}

// conn is what the policy checks about the downstream connection.
type conn struct {
	tls     bool
	version string
	mtls    bool
	peer    string
}

func connection() conn {
	var c conn
	v, err := sdk.PropertyString("connection", "tls_version")
	c.tls, c.version = err == nil && v != "", v
	c.mtls, _ = sdk.PropertyBool("connection", "mtls")
	if c.mtls {
		c.peer, _ = sdk.PropertyString("connection", "uri_san_peer_certificate")
	}
	return c
}

// check returns why the connection breaks the policy, or "".
func (p *Policy) check(c conn) string {
	switch p.Require {
	case "tls", "mtls":
		if !c.tls {
			return "TLS is required"
		}
		if p.MinTLSVersion != "" && tlsRank(c.version) < tlsRank(p.MinTLSVersion) {
			return c.version + " is below the minimum " + p.MinTLSVersion
		}
		if p.Require == "mtls" && !c.mtls {
			return "a verified client certificate (mTLS) is required"
		}
	}
	if p.Require != "mtls" || (len(p.AllowedSPIFFEIDs) == 0 && len(p.AllowedTrustDomains) == 0) {
		return ""
	}
	id := c.peer
	if !strings.HasPrefix(id, "spiffe://") {
		return "the client certificate carries no SPIFFE ID"
	}
	for _, a := range p.AllowedSPIFFEIDs {
		if pre, ok := strings.CutSuffix(a, "*"); ok && strings.HasPrefix(id, pre) || a == id {
			return ""
		}
	}
	td, _, _ := strings.Cut(strings.TrimPrefix(id, "spiffe://"), "/")
	for _, d := range p.AllowedTrustDomains {
		if d == td {
			return ""
		}
	}
	return "peer " + id + " is not allowed"
}

func (f *encryption) OnRequestHeaders(r *sdk.Request) sdk.Action {
	if f.redact != nil {
		sdk.SetFilterState("encryption.redact", f.redact)
	}
	if p := f.match(r); p != nil && p.Require != "" && p.Require != "none" {
		// A policy requiring nothing passes whatever the connection.
		if why := p.check(connection()); why != "" {
			f.rejected.Inc()
			sdk.LogInfof("rejected %s %s: policy %s: %s", r.Method(), redactPath(r.Path()), p.Name, why)
			return r.RespondDetails(403, []byte("forbidden: "+why+" (policy "+p.Name+")\n"),
				sdk.Fields{{"content-type", "text/plain"}}, "encryption_policy")
		}
	}
	for i, name := range f.cfg.EncryptHeaders {
		if found, handled := f.keys.sealHeaderInHost(f.encAAD[i]); handled {
			if found {
				f.encrypted.Inc()
			}
			continue
		}
		v, ok := r.Header().Lookup(name)
		if !ok {
			continue
		}
		ct, err := f.keys.sealTo(f.sealed[:0], f.encAAD[i], v)
		f.sealed = ct[:0]
		if err != nil {
			sdk.LogErrorf("encrypting %s: %v", name, err)
			return r.Respond(500, nil, nil)
		}
		// The host copies the value during the call: a view of the
		// buffer will do.
		r.Header().Set(name, unsafe.String(unsafe.SliceData(ct), len(ct)))
		f.encrypted.Inc()
	}
	return sdk.Continue
}

// redactPath drops the query, which may carry secrets, from logged paths.
func redactPath(p string) string {
	path, _, _ := strings.Cut(p, "?")
	return path
}

// Callbacks tells the host what the filter uses: the response's headers
// only for HSTS or headers to decrypt.
func (f *encryption) Callbacks() sdk.Callbacks {
	c := sdk.CallbackRequestHeaders
	if f.hsts != "" || len(f.cfg.DecryptHeaders) > 0 {
		c |= sdk.CallbackResponseHeaders
	}
	return c
}

func (f *encryption) OnResponseHeaders(w *sdk.Response) sdk.Action {
	if f.hsts != "" {
		if v, err := sdk.PropertyString("connection", "tls_version"); err == nil && v != "" {
			w.Header().Set("strict-transport-security", f.hsts)
		}
	}
	for _, name := range f.cfg.DecryptHeaders {
		v, ok := w.Header().Lookup(name)
		if !ok {
			continue
		}
		pt, err := f.keys.open(name, v)
		if err != nil {
			// Never pass on what could not be decrypted.
			w.Header().Del(name)
			f.decryptFailed.Inc()
			sdk.LogWarnf("decrypting response header %s: %v; removed it", name, err)
			continue
		}
		w.Header().Set(name, pt)
		f.decrypted.Inc()
	}
	return sdk.Continue
}
