package policy

import (
	"strings"
)

// matchKind is how a compiled pattern compares.
type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchSuffix
	matchAny // "*": any non-empty value
)

// pattern is a compiled "x", "x*", "*x" or "*".
type pattern struct {
	kind matchKind
	lit  string
	fold bool // compare without regard to ASCII case
}

func compilePattern(s string, fold bool) pattern {
	if fold {
		s = strings.ToLower(s)
	}
	switch {
	case s == "*":
		return pattern{kind: matchAny}
	case strings.HasPrefix(s, "*"):
		return pattern{kind: matchSuffix, lit: s[1:], fold: fold}
	case strings.HasSuffix(s, "*"):
		return pattern{kind: matchPrefix, lit: s[:len(s)-1], fold: fold}
	}
	return pattern{kind: matchExact, lit: s, fold: fold}
}

func compilePatterns(list []string, fold bool, canon func(string) string) []pattern {
	if len(list) == 0 {
		return nil
	}
	out := make([]pattern, len(list))
	for i, s := range list {
		if canon != nil {
			s = canon(s)
		}
		out[i] = compilePattern(s, fold)
	}
	return out
}

func (p *pattern) match(v string) bool {
	switch p.kind {
	case matchAny:
		return v != ""
	case matchPrefix:
		return len(v) >= len(p.lit) && equal(v[:len(p.lit)], p.lit, p.fold)
	case matchSuffix:
		return len(v) >= len(p.lit) && equal(v[len(v)-len(p.lit):], p.lit, p.fold)
	}
	return len(v) == len(p.lit) && equal(v, p.lit, p.fold)
}

// equal compares a value with a literal that is already lower case when
// fold is set.
func equal(v, lit string, fold bool) bool {
	if !fold {
		return v == lit
	}
	if len(v) != len(lit) {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lit[i] {
			return false
		}
	}
	return true
}

// anyMatch reports whether one of ps matches v.
func anyMatch(ps []pattern, v string) bool {
	for i := range ps {
		if ps[i].match(v) {
			return true
		}
	}
	return false
}

// listMatch applies a positive and a negative list: with a positive list,
// v must match one of it; with a negative list, it must match none.
func listMatch(pos, neg []pattern, v string) bool {
	if len(pos) > 0 && !anyMatch(pos, v) {
		return false
	}
	return len(neg) == 0 || !anyMatch(neg, v)
}

// ParseSPIFFE splits a workload's SPIFFE ID,
// spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT. The results are
// substrings of id; it does not allocate.
func ParseSPIFFE(id string) (trustDomain, namespace, serviceAccount string, ok bool) {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "", "", "", false
	}
	i := strings.IndexByte(rest, '/')
	if i <= 0 {
		return "", "", "", false
	}
	trustDomain, rest = rest[:i], rest[i:]
	rest, ok = strings.CutPrefix(rest, "/ns/")
	if !ok {
		return "", "", "", false
	}
	i = strings.IndexByte(rest, '/')
	if i <= 0 {
		return "", "", "", false
	}
	namespace, rest = rest[:i], rest[i:]
	serviceAccount, ok = strings.CutPrefix(rest, "/sa/")
	if !ok || serviceAccount == "" || strings.IndexByte(serviceAccount, '/') >= 0 {
		return "", "", "", false
	}
	return trustDomain, namespace, serviceAccount, true
}

// SPIFFEID returns the SPIFFE ID of a workload.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// canonicalPrincipal turns Istio's principal form ("td/ns/x/sa/y") into a
// SPIFFE ID; a full ID, "*" and a suffix pattern are kept as written.
func canonicalPrincipal(s string) string {
	if strings.HasPrefix(s, "spiffe://") || strings.HasPrefix(s, "*") {
		return s
	}
	return "spiffe://" + s
}

// stripPort returns host without a trailing :port.
func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.IndexByte(host[i:], ']') >= 0 {
		return host
	}
	for j := i + 1; j < len(host); j++ {
		if host[j] < '0' || host[j] > '9' {
			return host
		}
	}
	return host[:i]
}
