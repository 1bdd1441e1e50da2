package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Carrier is where a request's token may be: its headers, its query
// parameters and its cookies, looked up by name (headers without regard
// to case).
type Carrier interface {
	Get(name string) (value string, ok bool)
	Param(name string) (value string, ok bool)
	Cookie(name string) (value string, ok bool)
}

// Authenticator verifies the end user's JSON Web Token of a service's
// inbound requests with the request authentications that apply to it.
// It is safe for concurrent use.
type Authenticator struct {
	rules []jwtRule
	// outputs are every rule's claim headers, which no client may set.
	outputs []string
}

type jwtRule struct {
	issuer    string
	audiences []string
	headers   []JWTHeader
	params    []string
	cookies   []string
	forward   bool
	keys      *KeySource
	claims    []ClaimToHeader
	payload   string // the header the payload goes to; "" for none
}

// Authenticated is the outcome of a request that carried a token: the
// token's identity, and where the token was, so that the caller removes
// it unless the rule forwards it.
type Authenticated struct {
	Auth Auth
	// Header is the header that held the token, "" when Forward or when
	// it was a query parameter.
	Header string
	// Claims are the headers the rule copies claims, or the token's
	// payload, to, and their values.
	Claims [][2]string
}

// ErrNoToken says a request carries no token any rule looks for.
var ErrNoToken = errors.New("no token")

// leeway is the clock skew allowed on exp and nbf, Envoy's default.
const leeway = 60 * time.Second

// signatureAlgorithms are the asymmetric algorithms a token may be signed
// with; a shared secret (HS256) has no public key to distribute.
var signatureAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}

// NewAuthenticator compiles the rules of list (all of which apply to the
// service; see RequestAuthnFor), taking key sets fetched from a jwks_uri
// from keys. It returns nil when there is no rule.
func NewAuthenticator(list []RequestAuthentication, keys *KeyCache) *Authenticator {
	a := &Authenticator{}
	for _, ra := range list {
		for _, r := range ra.JWTRules {
			jr := jwtRule{issuer: r.Issuer, audiences: r.Audiences, headers: r.FromHeaders, params: r.FromParams, cookies: r.FromCookies,
				forward: r.ForwardOriginalToken, claims: r.OutputClaimToHeaders, payload: r.OutputPayloadToHeader}
			for _, o := range r.OutputClaimToHeaders {
				if !slices.Contains(a.outputs, o.Header) {
					a.outputs = append(a.outputs, o.Header)
				}
			}
			if p := r.OutputPayloadToHeader; p != "" && !slices.Contains(a.outputs, p) {
				a.outputs = append(a.outputs, p)
			}
			if len(jr.headers) == 0 && len(jr.params) == 0 && len(jr.cookies) == 0 {
				jr.headers, jr.params = []JWTHeader{{Name: "authorization", Prefix: "Bearer "}}, []string{"access_token"}
			}
			if r.JWKS != "" {
				set, _ := ParseJWKS([]byte(r.JWKS)) // checked by Validate
				jr.keys = &KeySource{}
				jr.keys.set.Store(set)
			} else {
				jr.keys = keys.Get(r.JWKSURI)
			}
			a.rules = append(a.rules, jr)
		}
	}
	if len(a.rules) == 0 {
		return nil
	}
	return a
}

// Authenticate looks for a token where the rules say and verifies it. It
// returns ErrNoToken when there is none, nil with the token's identity
// when one rule's issuer signed it and its claims hold, and an error that
// says why otherwise (the request must then be refused, 401). A nil
// Authenticator (no request authentication) finds no token, whatever
// the request carries: a token is then the app's business.
func (a *Authenticator) Authenticate(c Carrier) (*Authenticated, error) {
	if a == nil {
		return nil, ErrNoToken
	}
	var token, header string
	var tok *jwt.JSONWebToken
	var claims jwt.Claims
	var rule *jwtRule
	for i := range a.rules {
		r := &a.rules[i]
		t, h := r.find(c)
		if t == "" {
			continue
		}
		if t != token {
			token, header = t, h
			parsed, err := jwt.ParseSigned(t, signatureAlgorithms)
			if err != nil {
				return nil, fmt.Errorf("jwt is not in the form of Header.Payload.Signature with an asymmetric algorithm: %w", err)
			}
			tok = parsed
			if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
				return nil, fmt.Errorf("jwt payload is not JSON: %w", err)
			}
		}
		if claims.Issuer == r.issuer {
			rule = r
			break
		}
	}
	if token == "" {
		return nil, ErrNoToken
	}
	if rule == nil {
		return nil, fmt.Errorf("jwt issuer %q is not configured", claims.Issuer)
	}
	all := map[string]any{}
	if err := rule.verify(tok, &claims, &all); err != nil {
		return nil, err
	}
	out := &Authenticated{Auth: Auth{Principal: claims.Issuer + "/" + claims.Subject, Audiences: claims.Audience, Claims: all}}
	if azp, ok := all["azp"].(string); ok {
		out.Auth.Presenter = azp
	}
	if !rule.forward {
		out.Header = header
	}
	for _, o := range rule.claims {
		if v := (&out.Auth).claim([]string{o.Claim}); len(v) == 1 {
			out.Claims = append(out.Claims, [2]string{o.Header, v[0]})
		}
	}
	if rule.payload != "" {
		// The compact form's second part: the payload's JSON,
		// base64url-encoded without padding, as Envoy forwards it.
		_, rest, _ := strings.Cut(token, ".")
		payload, _, _ := strings.Cut(rest, ".")
		out.Claims = append(out.Claims, [2]string{rule.payload, payload})
	}
	return out, nil
}

// OutputHeaders are the headers claims are copied to, which the caller
// removes from every request before it authenticates it.
func (a *Authenticator) OutputHeaders() []string {
	if a == nil {
		return nil
	}
	return a.outputs
}

// find returns the first token of the rule's locations, and the header it
// was in ("" for a query parameter).
func (r *jwtRule) find(c Carrier) (token, header string) {
	for _, h := range r.headers {
		v, ok := c.Get(h.Name)
		if !ok {
			continue
		}
		if h.Prefix != "" {
			if len(v) < len(h.Prefix) || !strings.EqualFold(v[:len(h.Prefix)], h.Prefix) {
				continue
			}
			v = v[len(h.Prefix):]
		}
		if v = strings.TrimSpace(v); v != "" {
			return v, h.Name
		}
	}
	for _, p := range r.params {
		if v, ok := c.Param(p); ok && v != "" {
			return v, ""
		}
	}
	for _, name := range r.cookies {
		if v, ok := c.Cookie(name); ok && v != "" {
			return v, ""
		}
	}
	return "", ""
}

// CookieValue returns the value of the cookie name in a Cookie header's
// value ("a=1; b=2"), without its quotes, and whether it is there.
func CookieValue(header, name string) (string, bool) {
	for header != "" {
		var pair string
		pair, header, _ = strings.Cut(header, ";")
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || k != name {
			continue
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}

// verify checks the token's signature with the rule's keys (the key its
// kid names, or, without a kid, any), its dates and its audience, and
// decodes every claim into all.
func (r *jwtRule) verify(tok *jwt.JSONWebToken, claims *jwt.Claims, all *map[string]any) error {
	set := r.keys.Keys()
	if set == nil {
		return fmt.Errorf("jwks of issuer %q is not fetched yet: %v", r.issuer, r.keys.Err())
	}
	kid := ""
	if len(tok.Headers) > 0 {
		kid = tok.Headers[0].KeyID
	}
	keys := set.Keys
	if kid != "" {
		keys = set.Key(kid)
		if len(keys) == 0 {
			r.keys.Stale()
			return fmt.Errorf("jwks doesn't have key to match kid %q", kid)
		}
	}
	verified := false
	for _, k := range keys {
		if tok.Claims(k, claims, all) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return errors.New("jwt verification fails")
	}
	expected := jwt.Expected{Issuer: r.issuer, Time: time.Now()}
	if err := claims.ValidateWithLeeway(expected, leeway); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return errors.New("jwt is expired")
		case errors.Is(err, jwt.ErrNotValidYet):
			return errors.New("jwt is not yet valid")
		}
		return fmt.Errorf("jwt is not valid: %w", err)
	}
	if len(r.audiences) > 0 && !slices.ContainsFunc(claims.Audience, func(a string) bool { return slices.Contains(r.audiences, a) }) {
		return errors.New("audiences in jwt are not allowed")
	}
	return nil
}

// KeyCache holds the key sets fetched from jwks_uri, one fetch per URI
// however many rules and reloads name it. The zero value is not usable;
// call NewKeyCache.
type KeyCache struct {
	mu      sync.Mutex
	sources map[string]*KeySource
	client  *http.Client
}

// NewKeyCache returns an empty cache that fetches with client (nil: a
// client with a 10 s timeout).
func NewKeyCache(client *http.Client) *KeyCache {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &KeyCache{sources: map[string]*KeySource{}, client: client}
}

// Get returns the source of uri's key set, fetching it the first time.
func (c *KeyCache) Get(uri string) *KeySource {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.sources[uri]; ok {
		return s
	}
	s := &KeySource{uri: uri, client: c.client}
	c.sources[uri] = s
	s.fetch()
	return s
}

// KeySource is one issuer's key set: inline, or fetched from a URI, again
// once it is refreshAfter old (or a token names a kid it lacks, at most
// every retryAfter), the last good set serving meanwhile.
type KeySource struct {
	uri    string
	client *http.Client
	set    atomic.Pointer[jose.JSONWebKeySet]

	mu       sync.Mutex
	fetching bool
	fetched  time.Time // of the last good set
	tried    time.Time
	err      error
}

// refreshAfter is how old a fetched set is fetched again, as Envoy's
// default cache duration for Istio; retryAfter spaces failed or forced
// fetches.
const (
	refreshAfter = 20 * time.Minute
	retryAfter   = 5 * time.Second
)

// Keys returns the set in force, nil before the first good fetch, and
// starts a fetch when the set is due for one.
func (s *KeySource) Keys() *jose.JSONWebKeySet {
	set := s.set.Load()
	if s.uri == "" {
		return set
	}
	s.mu.Lock()
	due := set == nil && time.Since(s.tried) > retryAfter || set != nil && time.Since(s.fetched) > refreshAfter && time.Since(s.tried) > retryAfter
	s.mu.Unlock()
	if due {
		s.fetch()
	}
	return set
}

// Stale asks for a fetch sooner than refreshAfter: a token named a key
// the set lacks, as after the issuer rotated its keys.
func (s *KeySource) Stale() {
	if s.uri == "" {
		return
	}
	s.mu.Lock()
	due := time.Since(s.tried) > retryAfter
	s.mu.Unlock()
	if due {
		s.fetch()
	}
}

// Err is the last fetch's error.
func (s *KeySource) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && s.set.Load() == nil {
		return errors.New("the first fetch is under way")
	}
	return s.err
}

// fetch gets the set on a goroutine of its own, unless one is under way.
func (s *KeySource) fetch() {
	s.mu.Lock()
	if s.fetching {
		s.mu.Unlock()
		return
	}
	s.fetching, s.tried = true, time.Now()
	s.mu.Unlock()
	go func() {
		set, err := s.get()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.fetching, s.err = false, err
		if err == nil {
			s.set.Store(set)
			s.fetched = time.Now()
		}
	}()
}

func (s *KeySource) get() (*jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.uri, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", s.uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: status %d", s.uri, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", s.uri, err)
	}
	set, err := ParseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("%s %w", s.uri, err)
	}
	return set, nil
}
