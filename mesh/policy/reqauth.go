package policy

import (
	"encoding/json"
	"net/url"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// RequestAuthentication says which JSON Web Tokens the inbound of a
// namespace's services (or of one service) accepts as the end user's
// identity, as Istio's RequestAuthentication: a request that carries a
// token is answered 401 unless one rule's issuer signed it and it is in
// date (and for one of the rule's audiences, when it names any); a
// request without a token goes on without an end user, which
// authorization policies tell apart (request_principals: ["*"] requires
// a token). The verified token's "ISSUER/SUBJECT", audiences, presenter
// and claims are what request_principals and the request.auth.*
// conditions of authorization policies match.
type RequestAuthentication struct {
	Name      string `json:"name" yaml:"name"`
	Namespace string `json:"namespace" yaml:"namespace"`
	// Service, when set, narrows it to one service of the namespace.
	Service  string    `json:"service,omitempty" yaml:"service,omitempty"`
	JWTRules []JWTRule `json:"jwt_rules" yaml:"jwt_rules"`
}

// JWTRule is one issuer whose tokens a RequestAuthentication accepts.
type JWTRule struct {
	// Issuer is the token's iss.
	Issuer string `json:"issuer" yaml:"issuer"`
	// Audiences, when any, are the aud values accepted; empty accepts
	// any.
	Audiences []string `json:"audiences,omitempty" yaml:"audiences,omitempty"`
	// JWKS is the issuer's public key set (RFC 7517), inline JSON; or
	// JWKSURI is where the sidecars fetch it (again every 20 minutes).
	// Exactly one of the two.
	JWKS    string `json:"jwks,omitempty" yaml:"jwks,omitempty"`
	JWKSURI string `json:"jwks_uri,omitempty" yaml:"jwks_uri,omitempty"`
	// FromHeaders and FromParams are where the token is looked for;
	// with neither, the Authorization header after "Bearer " and the
	// access_token query parameter, as Istio's defaults.
	FromHeaders []JWTHeader `json:"from_headers,omitempty" yaml:"from_headers,omitempty"`
	FromParams  []string    `json:"from_params,omitempty" yaml:"from_params,omitempty"`
	// FromCookies are cookies the token may be in (Istio's fromCookies),
	// looked at after the headers and the query parameters. A token in
	// a cookie stays in it: the app's other cookies are its own.
	FromCookies []string `json:"from_cookies,omitempty" yaml:"from_cookies,omitempty"`
	// ForwardOriginalToken keeps the token's header on the request to
	// the app; by default it is removed once verified.
	ForwardOriginalToken bool `json:"forward_original_token,omitempty" yaml:"forward_original_token,omitempty"`
	// OutputClaimToHeaders hand claims of a verified token to the app as
	// request headers (Istio's outputClaimToHeaders). The headers are
	// removed from every request first, so that no client sets them.
	OutputClaimToHeaders []ClaimToHeader `json:"output_claim_to_headers,omitempty" yaml:"output_claim_to_headers,omitempty"`
	// OutputPayloadToHeader hands the verified token's payload to the
	// app in this header, base64url-encoded JSON as it is in the token
	// (Istio's outputPayloadToHeader). Removed from every request first,
	// as the claim headers are.
	OutputPayloadToHeader string `json:"output_payload_to_header,omitempty" yaml:"output_payload_to_header,omitempty"`
}

// ClaimToHeader copies a claim (a string, number or boolean at the top of
// the token's claims) to a request header.
type ClaimToHeader struct {
	Header string `json:"header" yaml:"header"`
	Claim  string `json:"claim" yaml:"claim"`
}

// JWTHeader is a header a token is read from, after Prefix ("Bearer ").
type JWTHeader struct {
	Name   string `json:"name" yaml:"name"`
	Prefix string `json:"prefix,omitempty" yaml:"prefix,omitempty"`
}

// maxJWTRules bounds a request authentication's rules.
const maxJWTRules = 16

// Scope implements the scope of a mesh resource.
func (r *RequestAuthentication) Scope() (namespace, service, name string) {
	return r.Namespace, r.Service, r.Name
}

func (r *RequestAuthentication) name() string { return r.Name }

// Normalize lower-cases header names, in place.
func (r *RequestAuthentication) Normalize() {
	for i := range r.JWTRules {
		for j := range r.JWTRules[i].FromHeaders {
			h := &r.JWTRules[i].FromHeaders[j]
			h.Name = strings.ToLower(h.Name)
		}
		for j := range r.JWTRules[i].OutputClaimToHeaders {
			h := &r.JWTRules[i].OutputClaimToHeaders[j]
			h.Header = strings.ToLower(h.Header)
		}
		r.JWTRules[i].OutputPayloadToHeader = strings.ToLower(r.JWTRules[i].OutputPayloadToHeader)
	}
}

// Validate checks every field; its errors are a config.Errors whose paths
// start inside the resource ("jwt_rules[0].jwks").
func (r *RequestAuthentication) Validate() error {
	c := &checker{}
	checkScope(c, "", r.Name, r.Namespace, r.Service)
	switch {
	case len(r.JWTRules) == 0:
		c.add("jwt_rules", "is empty; give at least one issuer")
	case len(r.JWTRules) > maxJWTRules:
		c.add("jwt_rules", "has %d rules; at most %d", len(r.JWTRules), maxJWTRules)
	}
	issuers := map[string]int{}
	for i := range r.JWTRules {
		jr := &r.JWTRules[i]
		p := at("jwt_rules", i)
		if jr.Issuer == "" {
			c.add(field(p, "issuer"), "is required: the iss of the tokens the rule accepts")
		} else if j, dup := issuers[jr.Issuer]; dup {
			c.add(field(p, "issuer"), "%q is also jwt_rules[%d]'s", jr.Issuer, j)
		} else {
			issuers[jr.Issuer] = i
		}
		switch {
		case (jr.JWKS == "") == (jr.JWKSURI == ""):
			c.add(p, "give exactly one of jwks (the key set, inline) and jwks_uri (where to fetch it)")
		case jr.JWKS != "":
			if _, err := ParseJWKS([]byte(jr.JWKS)); err != nil {
				c.add(field(p, "jwks"), "%v", err)
			}
		default:
			if u, err := url.Parse(jr.JWKSURI); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				c.add(field(p, "jwks_uri"), "%q is not an http or https URL", jr.JWKSURI)
			}
		}
		for j, h := range jr.FromHeaders {
			hp := at(field(p, "from_headers"), j)
			if !validHeaderName(h.Name) {
				c.add(field(hp, "name"), "%q is not a header name", h.Name)
			}
			if strings.ContainsAny(h.Prefix, "\r\n\x00") {
				c.add(field(hp, "prefix"), "holds a control character")
			}
		}
		for j, q := range jr.FromParams {
			if q == "" || strings.ContainsAny(q, "&=#? \r\n") {
				c.add(at(field(p, "from_params"), j), "%q is not a query parameter name", q)
			}
		}
		for j, name := range jr.FromCookies {
			if !validCookieName(name) {
				c.add(at(field(p, "from_cookies"), j), "%q is not a cookie name", name)
			}
		}
		if h := jr.OutputPayloadToHeader; h != "" && !outputHeader(h) {
			c.add(field(p, "output_payload_to_header"), "%q is not a header a token's payload may be copied to", h)
		}
		for j, a := range jr.Audiences {
			if a == "" {
				c.add(at(field(p, "audiences"), j), "is empty")
			}
		}
		for j, o := range jr.OutputClaimToHeaders {
			op := at(field(p, "output_claim_to_headers"), j)
			if !outputHeader(o.Header) {
				c.add(field(op, "header"), "%q is not a header a claim may be copied to", o.Header)
			}
			if o.Claim == "" {
				c.add(field(op, "claim"), "is required")
			}
		}
	}
	return c.err()
}

// outputHeader reports whether a verified token's claim or payload may
// be copied to header h: a header name the request's routing and the
// mesh's identity do not depend on.
func outputHeader(h string) bool {
	return validHeaderName(h) && h != "host" && h != "authorization" && h != "x-wasmgate-peer-identity"
}

// validCookieName reports whether name is a cookie name (RFC 6265: an
// RFC 7230 token).
func validCookieName(name string) bool {
	return name != "" && validHeaderName(name)
}

// ParseJWKS parses a JSON Web Key Set of public keys that sign tokens.
func ParseJWKS(data []byte) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, jwksError{"is not a JSON Web Key Set: " + err.Error()}
	}
	if len(set.Keys) == 0 {
		return nil, jwksError{"holds no key"}
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return nil, jwksError{"holds a private key (kid " + k.KeyID + "): give the public keys only"}
		}
	}
	return &set, nil
}

type jwksError struct{ msg string }

func (e jwksError) Error() string { return e.msg }

// RequestAuthnFor returns the request authentications of list that apply
// to a service; invalid ones are left out.
func RequestAuthnFor(list []RequestAuthentication, namespace, service string) []RequestAuthentication {
	var out []RequestAuthentication
	for _, r := range list {
		r.Normalize()
		if r.Validate() != nil {
			continue
		}
		if appliesTo(r.Namespace, r.Service, namespace, service) {
			out = append(out, r)
		}
	}
	return out
}
