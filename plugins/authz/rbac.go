package authz

import (
	"fmt"
	"strings"

	"github.com/wasmgate/wasmgate/sdk"
)

// Rule allows or denies the requests it matches. Every condition that is
// set must hold; a list holds when any of its entries does.
type Rule struct {
	// Name appears in logs and in dry-run reports.
	Name string `json:"name"`
	// Action is "allow" or "deny".
	Action string `json:"action"`
	// Principals match the request's principal: exact, or a prefix ending
	// in "*" ("spiffe://example.org/ns/web/*"). "*" matches any
	// authenticated principal, "" an anonymous request.
	Principals []string `json:"principals"`
	// Methods match the request method, case-insensitively.
	Methods []string `json:"methods"`
	// Paths match the path without its query: exact, or a prefix ending in
	// "*" ("/admin/*").
	Paths []string `json:"paths"`
	// Headers must each be present with the value given ("*": any value).
	Headers map[string]string `json:"headers"`
}

// request is what rules look at. The method, path and headers are read
// from the host when a rule asks for them: each read is a call into the
// host, and most rule sets look at few of them.
type request struct {
	principal     string
	authenticated bool
	hdr           sdk.Header

	method, path         string
	haveMethod, havePath bool
}

func (q *request) Method() string {
	if !q.haveMethod {
		q.method, q.haveMethod = q.hdr.Get(":method"), true
	}
	return q.method
}

// Path returns the path without its query.
func (q *request) Path() string {
	if !q.havePath {
		q.path, _, _ = strings.Cut(q.hdr.Get(":path"), "?")
		q.havePath = true
	}
	return q.path
}

func (q *request) header(name string) string { return q.hdr.Get(name) }

func (r Rule) validate() error {
	if r.Action != "allow" && r.Action != "deny" {
		return fmt.Errorf("action %q is neither allow nor deny", r.Action)
	}
	return nil
}

func (r *Rule) matches(q *request) bool {
	if len(r.Principals) > 0 && !anyOf(r.Principals, func(p string) bool {
		switch {
		case p == "*":
			return q.authenticated
		case p == "":
			return !q.authenticated
		}
		return q.authenticated && glob(p, q.principal)
	}) {
		return false
	}
	if len(r.Methods) > 0 && !anyOf(r.Methods, func(m string) bool { return strings.EqualFold(m, q.Method()) }) {
		return false
	}
	if len(r.Paths) > 0 && !anyOf(r.Paths, func(p string) bool { return glob(p, q.Path()) }) {
		return false
	}
	for name, want := range r.Headers {
		got := q.header(name)
		if got == "" || (want != "*" && got != want) {
			return false
		}
	}
	return true
}

func anyOf(list []string, f func(string) bool) bool {
	for _, s := range list {
		if f(s) {
			return true
		}
	}
	return false
}

// glob matches exactly, or by prefix when pattern ends in "*".
func glob(pattern, s string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(s, p)
	}
	return pattern == s
}

// decide returns the first rule that matches q, or nil.
func decide(rules []Rule, q *request) *Rule {
	for i := range rules {
		if rules[i].matches(q) {
			return &rules[i]
		}
	}
	return nil
}
