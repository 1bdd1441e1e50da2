package authz

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// key is one verification key of a JWKS.
type key struct {
	kid    string
	alg    string // "HS256", "RS256" or "ES256"
	secret []byte
	rsa    *rsa.PublicKey
	ec     *ecdsa.PublicKey
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	K   string `json:"k"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

var b64 = base64.RawURLEncoding

// parseJWKS reads a JSON Web Key Set. Keys of other types, curves or
// uses are skipped; a set with no usable key is an error.
func parseJWKS(b []byte) ([]key, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	var keys []key
	var errs []error
	for i, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		k, err := j.key()
		if err != nil {
			errs = append(errs, fmt.Errorf("jwks: keys[%d]: %w", i, err))
			continue
		}
		if k.alg != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		errs = append(errs, errors.New("jwks: no usable key (HS256, RS256 or ES256)"))
		return nil, errors.Join(errs...)
	}
	return keys, nil
}

func (j jwk) key() (key, error) {
	k := key{kid: j.Kid}
	switch j.Kty {
	case "oct":
		s, err := b64.DecodeString(j.K)
		if err != nil || len(s) == 0 {
			return k, errors.New("bad k")
		}
		k.alg, k.secret = "HS256", s
	case "RSA":
		n, err1 := b64.DecodeString(j.N)
		e, err2 := b64.DecodeString(j.E)
		if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
			return k, errors.New("bad n or e (RSA keys of 2048 bits or more)")
		}
		exp := 0
		for _, c := range e {
			exp = exp<<8 | int(c)
		}
		k.alg = "RS256"
		k.rsa = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	case "EC":
		if j.Crv != "P-256" {
			return k, nil
		}
		x, err1 := b64.DecodeString(j.X)
		y, err2 := b64.DecodeString(j.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return k, errors.New("bad x or y")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return k, err
		}
		k.alg, k.ec = "ES256", pub
	default:
		return k, nil
	}
	if j.Alg != "" && j.Alg != k.alg {
		return key{}, nil
	}
	return k, nil
}

// claims are the registered claims the plugin checks, and all of them
// for the principal.
type claims struct {
	raw map[string]any
}

func (c claims) str(name string) string {
	s, _ := c.raw[name].(string)
	return s
}

func (c claims) num(name string) (float64, bool) {
	n, ok := c.raw[name].(float64)
	return n, ok
}

// audiences returns aud as a list (it may be a string or an array).
func (c claims) audiences() []string {
	switch v := c.raw["aud"].(type) {
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, a := range v {
			if s, ok := a.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// errUnknownKey says no key of the set has the token's kid: the set may
// have rotated.
var errUnknownKey = errors.New("no key matches the token's kid")

// verifier checks tokens against a policy.
type verifier struct {
	issuer    string
	audiences []string
	skew      time.Duration
}

// verify checks a compact JWS's signature with keys and its time and
// audience claims at now.
func (v *verifier) verify(token string, keys []key, now time.Time) (claims, error) {
	var c claims
	h, rest, ok1 := strings.Cut(token, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s, ".") {
		return c, errors.New("malformed token")
	}
	hb, err := b64.DecodeString(h)
	if err != nil {
		return c, errors.New("malformed token header")
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return c, errors.New("malformed token header")
	}
	switch hdr.Alg {
	case "HS256", "RS256", "ES256":
	default:
		return c, fmt.Errorf("algorithm %q is not accepted", hdr.Alg)
	}
	sig, err := b64.DecodeString(s)
	if err != nil {
		return c, errors.New("malformed signature")
	}
	signed := token[:len(h)+1+len(p)]
	digest := sha256.Sum256([]byte(signed))
	verified, candidates := false, 0
	for _, k := range keys {
		if k.alg != hdr.Alg || (hdr.Kid != "" && k.kid != "" && k.kid != hdr.Kid) {
			continue
		}
		candidates++
		if k.check(signed, digest[:], sig) {
			verified = true
			break
		}
	}
	if candidates == 0 {
		if hdr.Kid != "" {
			return c, errUnknownKey
		}
		return c, fmt.Errorf("no %s key", hdr.Alg)
	}
	if !verified {
		return c, errors.New("bad signature")
	}
	pb, err := b64.DecodeString(p)
	if err != nil {
		return c, errors.New("malformed payload")
	}
	if err := json.Unmarshal(pb, &c.raw); err != nil || c.raw == nil {
		return c, errors.New("malformed payload")
	}
	return c, v.checkClaims(c, now)
}

func (k key) check(signed string, digest, sig []byte) bool {
	switch k.alg {
	case "HS256":
		m := hmac.New(sha256.New, k.secret)
		m.Write([]byte(signed))
		return subtle.ConstantTimeCompare(m.Sum(nil), sig) == 1
	case "RS256":
		return rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, digest, sig) == nil
	case "ES256":
		if len(sig) != 64 {
			return false
		}
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k.ec, digest, r, s)
	}
	return false
}

func (v *verifier) checkClaims(c claims, now time.Time) error {
	t := float64(now.Unix())
	skew := v.skew.Seconds()
	if exp, ok := c.num("exp"); ok && t-skew >= exp {
		return errors.New("token expired")
	} else if _, present := c.raw["exp"]; present && !ok {
		return errors.New("malformed exp")
	}
	if nbf, ok := c.num("nbf"); ok && t+skew < nbf {
		return errors.New("token not yet valid")
	} else if _, present := c.raw["nbf"]; present && !ok {
		return errors.New("malformed nbf")
	}
	if v.issuer != "" && c.str("iss") != v.issuer {
		return fmt.Errorf("issuer %q is not accepted", c.str("iss"))
	}
	if len(v.audiences) > 0 {
		for _, a := range c.audiences() {
			for _, want := range v.audiences {
				if a == want {
					return nil
				}
			}
		}
		return errors.New("audience is not accepted")
	}
	return nil
}
