// Package authz is wasmgate's authorization plugin: it authenticates
// requests by JWT (HS256, RS256, ES256) or by the mTLS peer's SPIFFE ID,
// applies RBAC rules with default deny, and can ask an external
// authorization service.
//
// The module authz.wasm beside this file is built from ./module;
// ../firstparty holds it with the other first-party filters.
package authz

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wasmgate/wasmgate/sdk"
)

// Config is the plugin's configuration.
type Config struct {
	// JWT authenticates bearer tokens; nil accepts none.
	JWT *JWTConfig `json:"jwt"`
	// Principal says where the request's principal comes from.
	Principal PrincipalConfig `json:"principal"`
	// Rules are evaluated in order; the first that matches decides.
	Rules []Rule `json:"rules"`
	// Default is the decision when no rule matches: "deny" (the default)
	// or "allow".
	Default string `json:"default"`
	// ExtAuthz, when set, asks an external service about every request
	// the rules allow.
	ExtAuthz *ExtAuthzConfig `json:"ext_authz"`
	// DryRun logs and counts what would be denied and lets it through.
	DryRun bool `json:"dry_run"`
	// Realm of the WWW-Authenticate challenge; "wasmgate" by default.
	Realm string `json:"realm"`
	// PrincipalHeader, when set, names a request header that carries the
	// principal upstream (any client-sent value is replaced).
	PrincipalHeader string `json:"principal_header"`
}

// JWTConfig is how bearer tokens are checked.
type JWTConfig struct {
	Issuer    string   `json:"issuer"`
	Audiences []string `json:"audiences"`
	// ClockSkew tolerated on exp and nbf; "60s" by default.
	ClockSkew string `json:"clock_skew"`
	// JWKS is an inline key set; or JWKSCluster and JWKSPath fetch one by
	// HTTP call, cached for JWKSCacheDuration ("10m").
	JWKS              json.RawMessage `json:"jwks"`
	JWKSCluster       string          `json:"jwks_cluster"`
	JWKSPath          string          `json:"jwks_path"`
	JWKSAuthority     string          `json:"jwks_authority"`
	JWKSCacheDuration string          `json:"jwks_cache_duration"`
	// Optional lets requests without a token through authentication (they
	// are anonymous to the rules). A token that is present must be valid.
	Optional bool `json:"optional"`
	// TokenCacheSize is how many verified tokens each instance remembers,
	// so that a token's signature is checked once; 0 means 1024, -1 none.
	// exp and nbf are still checked on every request.
	TokenCacheSize int `json:"token_cache_size"`
}

// PrincipalConfig picks the principal.
type PrincipalConfig struct {
	// Claim of a valid token that names the principal; "sub" by default.
	Claim string `json:"claim"`
	// Peer uses the mTLS peer's URI SAN (its SPIFFE ID) when the request
	// carries no token.
	Peer bool `json:"peer"`
}

// ExtAuthzConfig is an external authorization service. It receives the
// request's method and path (after PathPrefix), the headers named in
// Headers and x-authz-principal; a 2xx answer allows.
type ExtAuthzConfig struct {
	Cluster    string   `json:"cluster"`
	PathPrefix string   `json:"path_prefix"`
	Authority  string   `json:"authority"`
	Headers    []string `json:"headers"`
	// Timeout is "1s" by default; a failed or late answer denies.
	Timeout string `json:"timeout"`
}

type authz struct {
	sdk.BaseFilter
	cfg      Config
	verifier *verifier
	keys     []key     // inline or cached
	expires  time.Time // of fetched keys
	lastKid  time.Time // last refetch for an unknown kid
	cacheTTL time.Duration
	extTO    time.Duration
	tokens   map[string]claims // verified with the current keys

	allowed, denied, unauthenticated, dryRun sdk.Counter
}

// reqState follows a request through asynchronous steps.
type reqState struct {
	principal     string
	authenticated bool
	authDone      bool
	extDone       bool
	fetched       bool
}

// RootID is the root_id that selects this filter in a module holding
// several (../firstparty).
const RootID = "authz"

// New builds the filter of one configuration: the function the module
// registers with the SDK.
func New(config []byte) (sdk.Filter, error) { return newFilter(config) }

func newFilter(raw []byte) (sdk.Filter, error) {
	var c Config
	if err := strictJSON(raw, &c); err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	f := &authz{cfg: c}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	f.allowed = sdk.Metrics.Counter("authz.allowed")
	f.denied = sdk.Metrics.Counter("authz.denied")
	f.unauthenticated = sdk.Metrics.Counter("authz.unauthenticated")
	f.dryRun = sdk.Metrics.Counter("authz.dry_run_denied")
	return f, nil
}

func strictJSON(raw []byte, v any) error {
	if len(raw) == 0 {
		return nil
	}
	d := json.NewDecoder(strings.NewReader(string(raw)))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

func duration(field, v, def string) (time.Duration, error) {
	if v == "" {
		v = def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: %q is not a duration", field, v)
	}
	return d, nil
}

func (f *authz) validate() error {
	c := &f.cfg
	if c.Realm == "" {
		c.Realm = "wasmgate"
	}
	if c.Principal.Claim == "" {
		c.Principal.Claim = "sub"
	}
	switch c.Default {
	case "":
		c.Default = "deny"
	case "deny", "allow":
	default:
		return fmt.Errorf("default: %q is neither allow nor deny", c.Default)
	}
	for i, r := range c.Rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("rules[%d]: %w", i, err)
		}
		if c.Rules[i].Name == "" {
			c.Rules[i].Name = fmt.Sprintf("rules[%d]", i)
		}
	}
	if j := c.JWT; j != nil {
		switch {
		case j.TokenCacheSize == 0:
			j.TokenCacheSize = 1024
		case j.TokenCacheSize < -1:
			return errors.New("jwt.token_cache_size: -1 (none), 0 (1024) or a size")
		}
		skew, err := duration("jwt.clock_skew", j.ClockSkew, "60s")
		if err != nil {
			return err
		}
		f.verifier = &verifier{issuer: j.Issuer, audiences: j.Audiences, skew: skew}
		switch {
		case len(j.JWKS) > 0 && j.JWKSCluster != "":
			return errors.New("jwt: set jwks or jwks_cluster, not both")
		case len(j.JWKS) > 0:
			keys, err := parseJWKS(j.JWKS)
			if err != nil {
				return fmt.Errorf("jwt.%w", err)
			}
			f.keys = keys
		case j.JWKSCluster != "":
			if j.JWKSPath == "" {
				return errors.New("jwt.jwks_path: required with jwks_cluster")
			}
			if j.JWKSAuthority == "" {
				j.JWKSAuthority = j.JWKSCluster
			}
			if f.cacheTTL, err = duration("jwt.jwks_cache_duration", j.JWKSCacheDuration, "10m"); err != nil {
				return err
			}
		default:
			return errors.New("jwt: jwks or jwks_cluster is required")
		}
	}
	if e := c.ExtAuthz; e != nil {
		if e.Cluster == "" {
			return errors.New("ext_authz.cluster: required")
		}
		if e.Authority == "" {
			e.Authority = e.Cluster
		}
		var err error
		if f.extTO, err = duration("ext_authz.timeout", e.Timeout, "1s"); err != nil {
			return err
		}
	}
	return nil
}

// Callbacks tells the host that the filter decides on the request's
// headers alone.
func (f *authz) Callbacks() sdk.Callbacks { return sdk.CallbackRequestHeaders }

func (f *authz) OnRequestHeaders(r *sdk.Request) sdk.Action {
	st := &reqState{}
	r.SetData(st)
	if f.cfg.PrincipalHeader != "" {
		r.Header().Del(f.cfg.PrincipalHeader)
	}
	return f.run(r, st)
}

// run takes the request as far as it can: authentication, rules, the
// external service. It returns Pause while it waits for an HTTP call,
// whose callback calls resume.
func (f *authz) run(r *sdk.Request, st *reqState) sdk.Action {
	if !st.authDone {
		pending, err := f.authenticate(r, st)
		if pending {
			return sdk.Pause
		}
		if err != nil {
			return f.challenge(r, err)
		}
		st.authDone = true
	}
	q := request{principal: st.principal, authenticated: st.authenticated, hdr: r.Header()}
	rule := decide(f.cfg.Rules, &q)
	allow := f.cfg.Default == "allow"
	if rule != nil {
		allow = rule.Action == "allow"
	}
	if !allow {
		reason := "no rule matched"
		if rule != nil {
			reason = "rule " + rule.Name
		}
		return f.deny(r, st, reason)
	}
	if f.cfg.ExtAuthz != nil && !st.extDone {
		return f.askExternal(r, st)
	}
	f.allowed.Inc()
	if f.cfg.PrincipalHeader != "" && st.authenticated {
		r.Header().Set(f.cfg.PrincipalHeader, st.principal)
	}
	if st.authenticated {
		sdk.SetFilterState("authz.principal", []byte(st.principal))
	}
	return sdk.Continue
}

// resume continues a request after an HTTP call answered.
func (f *authz) resume(r *sdk.Request, st *reqState) {
	if f.run(r, st) == sdk.Continue {
		r.Resume()
	}
}

// authenticate finds the request's principal. It reports pending when it
// started fetching keys.
func (f *authz) authenticate(r *sdk.Request, st *reqState) (pending bool, err error) {
	token := ""
	if h := r.Header().Get("authorization"); h != "" {
		scheme, t, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(t) == "" {
			return false, errors.New("authorization is not a bearer token")
		}
		token = strings.TrimSpace(t)
	}
	if token == "" {
		if f.cfg.Principal.Peer {
			if id, ok := peerID(); ok {
				st.principal, st.authenticated = id, true
				return false, nil
			}
		}
		if f.cfg.JWT != nil && !f.cfg.JWT.Optional {
			return false, errMissing
		}
		return false, nil
	}
	if f.cfg.JWT == nil {
		return false, errors.New("bearer tokens are not accepted here")
	}
	now := sdk.Now()
	keys := f.currentKeys(now)
	if keys == nil {
		return f.startFetch(r, st)
	}
	c, err := f.verify(token, keys, now)
	if errors.Is(err, errUnknownKey) && f.cfg.JWT.JWKSCluster != "" && !st.fetched && now.Sub(f.lastKid) > 30*time.Second {
		// The issuer may have rotated its keys.
		f.lastKid = now
		f.keys = nil
		return f.startFetch(r, st)
	}
	if err != nil {
		return false, err
	}
	p, _ := c.raw[f.cfg.Principal.Claim].(string)
	if p == "" {
		return false, fmt.Errorf("token has no %q claim", f.cfg.Principal.Claim)
	}
	st.principal, st.authenticated = p, true
	return false, nil
}

var (
	errMissing     = errors.New("missing bearer token")
	errUnavailable = errors.New("signing keys are unavailable")
)

func (f *authz) startFetch(r *sdk.Request, st *reqState) (bool, error) {
	if f.fetchKeys(r, st) {
		return true, nil
	}
	return false, errUnavailable
}

// verify checks a token, remembering the ones whose signature holds.
func (f *authz) verify(token string, keys []key, now time.Time) (claims, error) {
	if c, ok := f.tokens[token]; ok {
		return c, f.verifier.checkClaims(c, now)
	}
	c, err := f.verifier.verify(token, keys, now)
	if err != nil || f.cfg.JWT.TokenCacheSize < 0 {
		return c, err
	}
	if f.tokens == nil || len(f.tokens) >= f.cfg.JWT.TokenCacheSize {
		f.tokens = make(map[string]claims)
	}
	f.tokens[token] = c
	return c, nil
}

// peerID returns the verified mTLS peer's URI SAN.
func peerID() (string, bool) {
	mtls, err := sdk.PropertyBool("connection", "mtls")
	if err != nil || !mtls {
		return "", false
	}
	id, err := sdk.PropertyString("connection", "uri_san_peer_certificate")
	return id, err == nil && id != ""
}

// The shared-data entry that carries fetched keys to every instance: 8
// bytes of fetch time (Unix ns), then the JWKS.
func (f *authz) sharedKey() string {
	return "authz.jwks." + f.cfg.JWT.JWKSCluster + f.cfg.JWT.JWKSPath
}

// currentKeys returns usable keys, or nil when they must be fetched.
func (f *authz) currentKeys(now time.Time) []key {
	j := f.cfg.JWT
	if j.JWKSCluster == "" {
		return f.keys
	}
	if f.keys != nil && now.Before(f.expires) {
		return f.keys
	}
	if b, _, err := sdk.SharedData.Get(f.sharedKey()); err == nil && len(b) > 8 {
		at := time.Unix(0, int64(binary.LittleEndian.Uint64(b)))
		if now.Sub(at) < f.cacheTTL && at.After(f.lastKid) {
			if keys, err := parseJWKS(b[8:]); err == nil {
				f.keys, f.expires, f.tokens = keys, at.Add(f.cacheTTL), nil
				return keys
			}
		}
	}
	return nil
}

// fetchKeys asks the issuer for its keys and continues the request when
// they come. It reports whether the request waits.
func (f *authz) fetchKeys(r *sdk.Request, st *reqState) bool {
	j := f.cfg.JWT
	st.fetched = true
	err := sdk.HTTPCall(j.JWKSCluster, &sdk.HTTPRequest{Path: j.JWKSPath, Authority: j.JWKSAuthority,
		Header: sdk.Fields{{"accept", "application/json"}}}, 5*time.Second,
		func(resp *sdk.HTTPResponse, err error) {
			if err == nil && resp.Status != 200 {
				err = fmt.Errorf("status %d", resp.Status)
			}
			var keys []key
			if err == nil {
				keys, err = parseJWKS(resp.Body)
			}
			if err != nil {
				sdk.LogErrorf("fetching keys from %s%s: %v", j.JWKSCluster, j.JWKSPath, err)
				f.challengeAsync(r, errUnavailable)
				return
			}
			now := sdk.Now()
			f.keys, f.expires, f.tokens = keys, now.Add(f.cacheTTL), nil
			entry := binary.LittleEndian.AppendUint64(nil, uint64(now.UnixNano()))
			sdk.SharedData.Set(f.sharedKey(), append(entry, resp.Body...), 0)
			f.resume(r, st)
		})
	if err != nil {
		sdk.LogErrorf("fetching keys from %s: %v", j.JWKSCluster, err)
		return false
	}
	return true
}

func (f *authz) challengeAsync(r *sdk.Request, err error) {
	if f.challenge(r, err) == sdk.Continue {
		r.Resume()
	}
}

// challenge answers 401 with a Bearer challenge, or, in dry run, logs it
// and lets the request through.
func (f *authz) challenge(r *sdk.Request, err error) sdk.Action {
	if f.cfg.DryRun {
		f.dryRun.Inc()
		sdk.LogWarnf("dry run: would answer 401 to %s %s: %v", r.Method(), r.Path(), err)
		return sdk.Continue
	}
	f.unauthenticated.Inc()
	ch := `Bearer realm="` + f.cfg.Realm + `"`
	if !errors.Is(err, errMissing) {
		ch += `, error="invalid_token", error_description="` + strings.ReplaceAll(err.Error(), `"`, `'`) + `"`
	}
	sdk.LogDebugf("401 %s %s: %v", r.Method(), r.Path(), err)
	return r.RespondDetails(401, []byte("unauthorized\n"), sdk.Fields{
		{"www-authenticate", ch}, {"content-type", "text/plain"},
	}, "authz_unauthenticated")
}

// deny answers 403, or, in dry run, logs it and lets the request through.
func (f *authz) deny(r *sdk.Request, st *reqState, reason string) sdk.Action {
	who := st.principal
	if !st.authenticated {
		who = "anonymous"
	}
	if f.cfg.DryRun {
		f.dryRun.Inc()
		sdk.LogWarnf("dry run: would deny %s %s for %s: %s", r.Method(), r.Path(), who, reason)
		return sdk.Continue
	}
	f.denied.Inc()
	sdk.LogDebugf("403 %s %s for %s: %s", r.Method(), r.Path(), who, reason)
	return r.RespondDetails(403, []byte("forbidden\n"), sdk.Fields{{"content-type", "text/plain"}}, "authz_denied")
}

// askExternal sends the request's description to the external service.
func (f *authz) askExternal(r *sdk.Request, st *reqState) sdk.Action {
	e := f.cfg.ExtAuthz
	h := sdk.Fields{}
	for _, name := range e.Headers {
		if v, ok := r.Header().Lookup(name); ok {
			h.Add(name, v)
		}
	}
	if st.authenticated {
		h.Add("x-authz-principal", st.principal)
	}
	err := sdk.HTTPCall(e.Cluster, &sdk.HTTPRequest{Method: r.Method(), Path: e.PathPrefix + r.Path(),
		Authority: e.Authority, Header: h}, f.extTO, func(resp *sdk.HTTPResponse, err error) {
		if err != nil || resp.Status/100 != 2 {
			reason := "external authorization denied"
			if err != nil {
				reason = "external authorization failed: " + err.Error()
			} else {
				reason += fmt.Sprintf(" (%d)", resp.Status)
			}
			if f.deny(r, st, reason) == sdk.Continue {
				r.Resume()
			}
			return
		}
		st.extDone = true
		f.resume(r, st)
	})
	if err != nil {
		return f.deny(r, st, "external authorization failed: "+err.Error())
	}
	return sdk.Pause
}
