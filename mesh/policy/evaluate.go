package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Headers looks up a request header by name, without regard to case. An
// adapter over the proxy's request implements it; Get must not allocate
// for evaluation to stay allocation-free.
type Headers interface {
	Get(name string) (value string, ok bool)
}

// Request is what a decision is made on: the peer's identity from the
// mutual TLS handshake and the request line. The evaluator only reads it
// and keeps nothing of it.
type Request struct {
	// Principal is the peer's SPIFFE ID, "" for a plain-text peer.
	Principal string
	// SourceIP is the peer's address.
	SourceIP netip.Addr
	// Host is the Host header or :authority; Method and Path (with or
	// without its query) are the request line's.
	Host, Method, Path string
	// Port is the inbound port the request arrived on.
	Port int
	// Headers may be nil: then every header is absent.
	Headers Headers
	// Connection marks an opaque TCP connection (a service of protocol
	// tcp) rather than an HTTP request: it has no host, method, path or
	// headers. As in Istio, a rule that names any of them never matches
	// a connection in an ALLOW or AUDIT policy, and is matched without
	// them in a DENY policy, so that such a rule fails closed.
	Connection bool
	// Auth is the end user's token, verified by the service's request
	// authentication; nil when the request carried none.
	Auth *Auth
}

// Auth is what a verified JSON Web Token says of a request's end user.
type Auth struct {
	// Principal is "ISSUER/SUBJECT".
	Principal string
	Audiences []string
	// Presenter is the authorized party (azp).
	Presenter string
	// Claims are the token's claims as JSON decodes them.
	Claims map[string]any
}

// claim returns the values of a claim at path: a string is one value, a
// list of strings each of its strings, a number or a boolean its JSON
// text; anything else, or a missing claim, none.
func (a *Auth) claim(path []string) []string {
	if a == nil {
		return nil
	}
	var v any = a.Claims
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		if v, ok = m[k]; !ok {
			return nil
		}
	}
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case float64:
		return []string{strconv.FormatFloat(x, 'f', -1, 64)}
	case bool:
		return []string{strconv.FormatBool(x)}
	}
	return nil
}

// Reason says why a decision was made.
type Reason uint8

// The reasons of a decision.
const (
	// NoPolicy: no ALLOW policy applies to the destination; allowed.
	NoPolicy Reason = iota
	// AllowMatched: a rule of an ALLOW policy matched; allowed.
	AllowMatched
	// DenyMatched: a rule of a DENY policy matched; denied.
	DenyMatched
	// NoAllowMatched: ALLOW policies apply and none matched; denied.
	NoAllowMatched
)

func (r Reason) String() string {
	switch r {
	case NoPolicy:
		return "no allow policy applies"
	case AllowMatched:
		return "allowed by policy"
	case DenyMatched:
		return "denied by policy"
	case NoAllowMatched:
		return "no allow rule matched"
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Decision is the outcome of one evaluation. Its strings are the
// compiled policies' own, so making one allocates nothing.
type Decision struct {
	Allowed bool
	Reason  Reason
	// Policy is the name of the policy that decided (AllowMatched,
	// DenyMatched), else "". Rule is the index of its matching rule, or -1.
	Policy string
	Rule   int
	// AuditPolicy and AuditRule name the first AUDIT policy and rule that
	// matched ("" and -1: none); the request should then be logged.
	AuditPolicy string
	AuditRule   int
}

// String describes the decision for a log line or a person.
func (d Decision) String() string {
	var b strings.Builder
	if d.Allowed {
		b.WriteString("allow: ")
	} else {
		b.WriteString("deny: ")
	}
	b.WriteString(d.Reason.String())
	if d.Policy != "" {
		fmt.Fprintf(&b, " %s rules[%d]", d.Policy, d.Rule)
	}
	if d.AuditPolicy != "" {
		fmt.Fprintf(&b, " (audited by %s rules[%d])", d.AuditPolicy, d.AuditRule)
	}
	return b.String()
}

// Set is a compiled set of authorization policies. It is immutable and
// safe for concurrent use.
type Set struct {
	policies []*compiled
}

// Table holds the policies that apply to one destination service, split
// by action, ready for Evaluate. It is immutable and safe for concurrent
// use: a sidecar builds its own once per policy change and evaluates every
// inbound request against it.
type Table struct {
	deny, allow, audit []*compiled
}

type compiled struct {
	name      string
	namespace string
	service   string
	action    Action
	rules     []rule
}

type rule struct {
	from []source
	to   []operation
	when []condition
	// l7 marks a rule that reads an HTTP attribute (hosts, methods,
	// paths, request headers); l4 is the same rule without them, what a
	// DENY policy matches a connection with.
	l7 bool
	l4 *rule
}

type source struct {
	principals, notPrincipals []pattern
	// requestPrincipals, notRequestPrincipals: the end user's token's.
	requestPrincipals, notRequestPrincipals []pattern
	namespaces, notNamespaces               []pattern
	ipBlocks, notIPBlocks                   []netip.Prefix
}

type operation struct {
	hosts, notHosts     []pattern
	ports, notPorts     []int
	methods, notMethods []pattern
	paths, notPaths     []pattern
}

// conditionKind is the attribute a condition reads.
type conditionKind uint8

const (
	condHeader conditionKind = iota
	condPrincipal
	condNamespace
	condIP
	condPort
	condAuthPrincipal
	condAuthAudiences
	condAuthPresenter
	condAuthClaim
)

type condition struct {
	kind         conditionKind
	header       string
	claim        []string
	values, nots []pattern
	blocks       []netip.Prefix
	notBlocks    []netip.Prefix
	ports        []int
	notPorts     []int
}

// Compile validates and compiles policies. Its errors name the field as
// "<policy name>: <path>". The policies are copied; the caller may change
// them afterwards.
func Compile(policies []AuthorizationPolicy) (*Set, error) {
	s := &Set{policies: make([]*compiled, 0, len(policies))}
	var errs []string
	for i := range policies {
		p := policies[i]
		p.Normalize()
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Sprintf("authorization policy %q: %v", p.Name, err))
			continue
		}
		s.policies = append(s.policies, compile(&p))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	// Root first, then namespace-wide, then per service, each by name:
	// the order names the deciding policy when several match.
	slices.SortFunc(s.policies, func(a, b *compiled) int {
		return cmp.Or(cmp.Compare(scopeRank(a), scopeRank(b)), strings.Compare(a.name, b.name))
	})
	return s, nil
}

func scopeRank(c *compiled) int {
	switch {
	case c.namespace == RootNamespace:
		return 0
	case c.service == "":
		return 1
	}
	return 2
}

func compile(p *AuthorizationPolicy) *compiled {
	c := &compiled{name: p.Name, namespace: p.Namespace, service: p.Service, action: cmp.Or(p.Action, Allow)}
	for _, r := range p.Rules {
		var cr rule
		for _, f := range r.From {
			cr.from = append(cr.from, source{
				principals:    compilePatterns(f.Principals, false, canonicalPrincipal),
				notPrincipals: compilePatterns(f.NotPrincipals, false, canonicalPrincipal),
				namespaces:    compilePatterns(f.Namespaces, false, nil),
				notNamespaces: compilePatterns(f.NotNamespaces, false, nil),
				ipBlocks:      blocks(f.IPBlocks),
				notIPBlocks:   blocks(f.NotIPBlocks),

				requestPrincipals:    compilePatterns(f.RequestPrincipals, false, nil),
				notRequestPrincipals: compilePatterns(f.NotRequestPrincipals, false, nil),
			})
		}
		for _, o := range r.To {
			cr.to = append(cr.to, operation{
				hosts: compilePatterns(o.Hosts, true, nil), notHosts: compilePatterns(o.NotHosts, true, nil),
				ports: slices.Clone(o.Ports), notPorts: slices.Clone(o.NotPorts),
				methods: compilePatterns(o.Methods, false, nil), notMethods: compilePatterns(o.NotMethods, false, nil),
				paths: compilePatterns(o.Paths, false, nil), notPaths: compilePatterns(o.NotPaths, false, nil),
			})
		}
		for _, w := range r.When {
			cr.when = append(cr.when, compileCondition(w))
		}
		cr.l4 = layer4(&cr)
		cr.l7 = cr.l4 != nil
		c.rules = append(c.rules, cr)
	}
	return c
}

// layer4 returns r without its HTTP attributes, or nil when it has none.
func layer4(r *rule) *rule {
	l7 := false
	l4 := &rule{}
	for _, f := range r.from {
		// A connection carries no token.
		if len(f.requestPrincipals)+len(f.notRequestPrincipals) > 0 {
			l7 = true
			f.requestPrincipals, f.notRequestPrincipals = nil, nil
		}
		l4.from = append(l4.from, f)
	}
	for _, o := range r.to {
		if len(o.hosts)+len(o.notHosts)+len(o.methods)+len(o.notMethods)+len(o.paths)+len(o.notPaths) > 0 {
			l7 = true
		}
		l4.to = append(l4.to, operation{ports: o.ports, notPorts: o.notPorts})
	}
	for _, w := range r.when {
		if w.kind == condHeader || w.kind >= condAuthPrincipal {
			l7 = true
			continue
		}
		l4.when = append(l4.when, w)
	}
	if !l7 {
		return nil
	}
	return l4
}

func compileCondition(w Condition) condition {
	values, nots := compilePatterns(w.Values, false, nil), compilePatterns(w.NotValues, false, nil)
	if h, ok := headerKey(w.Key); ok {
		return condition{kind: condHeader, header: h, values: values, nots: nots}
	}
	if path, ok := claimKey(w.Key); ok {
		return condition{kind: condAuthClaim, claim: path, values: values, nots: nots}
	}
	switch w.Key {
	case "request.auth.principal":
		return condition{kind: condAuthPrincipal, values: values, nots: nots}
	case "request.auth.audiences":
		return condition{kind: condAuthAudiences, values: values, nots: nots}
	case "request.auth.presenter":
		return condition{kind: condAuthPresenter, values: values, nots: nots}
	case "source.principal":
		return condition{kind: condPrincipal, values: compilePatterns(w.Values, false, canonicalPrincipal), nots: compilePatterns(w.NotValues, false, canonicalPrincipal)}
	case "source.namespace":
		return condition{kind: condNamespace, values: compilePatterns(w.Values, false, nil), nots: compilePatterns(w.NotValues, false, nil)}
	case "source.ip":
		return condition{kind: condIP, blocks: blocks(w.Values), notBlocks: blocks(w.NotValues)}
	}
	ports := func(list []string) []int {
		var out []int
		for _, v := range list {
			n, _ := strconv.Atoi(v)
			out = append(out, n)
		}
		return out
	}
	return condition{kind: condPort, ports: ports(w.Values), notPorts: ports(w.NotValues)}
}

func blocks(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		p, _ := parseBlock(s)
		out = append(out, p)
	}
	return out
}

// Len is the number of policies in the set.
func (s *Set) Len() int { return len(s.policies) }

// For returns the table of the policies that apply to a service of a
// namespace. It allocates; call it once per set, not per request.
func (s *Set) For(namespace, service string) *Table {
	t := &Table{}
	for _, c := range s.policies {
		if c.namespace != RootNamespace && (c.namespace != namespace || c.service != "" && c.service != service) {
			continue
		}
		switch c.action {
		case Deny:
			t.deny = append(t.deny, c)
		case Audit:
			t.audit = append(t.audit, c)
		default:
			t.allow = append(t.allow, c)
		}
	}
	return t
}

// Policies returns the names of the policies in the table: deny, then
// allow, then audit.
func (t *Table) Policies() []string {
	var out []string
	for _, l := range [][]*compiled{t.deny, t.allow, t.audit} {
		for _, c := range l {
			out = append(out, c.name)
		}
	}
	return out
}

// Evaluate decides on one request. It does not allocate.
func (t *Table) Evaluate(r *Request) Decision {
	v := view{r: r, path: r.Path, host: r.Host}
	if i := strings.IndexByte(v.path, '?'); i >= 0 {
		v.path = v.path[:i]
	}
	_, v.namespace, _, _ = ParseSPIFFE(r.Principal)
	d := Decision{Rule: -1, AuditRule: -1}
	for _, c := range t.audit {
		if i := c.match(&v); i >= 0 {
			d.AuditPolicy, d.AuditRule = c.name, i
			break
		}
	}
	for _, c := range t.deny {
		if i := c.match(&v); i >= 0 {
			d.Reason, d.Policy, d.Rule = DenyMatched, c.name, i
			return d
		}
	}
	if len(t.allow) == 0 {
		d.Allowed, d.Reason = true, NoPolicy
		return d
	}
	for _, c := range t.allow {
		if i := c.match(&v); i >= 0 {
			d.Allowed, d.Reason, d.Policy, d.Rule = true, AllowMatched, c.name, i
			return d
		}
	}
	d.Reason = NoAllowMatched
	return d
}

// view is a request with what every rule reads worked out once.
type view struct {
	r         *Request
	path      string
	host      string
	namespace string
}

// match returns the index of the first rule that matches, or -1.
func (c *compiled) match(v *view) int {
	for i := range c.rules {
		r := &c.rules[i]
		if v.r.Connection && r.l7 {
			if c.action != Deny {
				continue
			}
			r = r.l4
		}
		if r.match(v) {
			return i
		}
	}
	return -1
}

func (r *rule) match(v *view) bool {
	if len(r.from) > 0 {
		ok := false
		for i := range r.from {
			if r.from[i].match(v) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.to) > 0 {
		ok := false
		for i := range r.to {
			if r.to[i].match(v) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range r.when {
		if !r.when[i].match(v) {
			return false
		}
	}
	return true
}

func (s *source) match(v *view) bool {
	return listMatch(s.principals, s.notPrincipals, v.r.Principal) &&
		listMatch(s.namespaces, s.notNamespaces, v.namespace) &&
		blockMatch(s.ipBlocks, s.notIPBlocks, v.r.SourceIP) &&
		(len(s.requestPrincipals)+len(s.notRequestPrincipals) == 0 || listMatch(s.requestPrincipals, s.notRequestPrincipals, v.r.Auth.principal()))
}

// principal is the request principal of a, "" for none.
func (a *Auth) principal() string {
	if a == nil {
		return ""
	}
	return a.Principal
}

// valuesMatch is listMatch for an attribute of several values, as
// Istio's: values needs one of them to match, not_values none.
func valuesMatch(pos, neg []pattern, vals []string) bool {
	if len(pos) > 0 && !slices.ContainsFunc(vals, func(v string) bool { return anyMatch(pos, v) }) {
		return false
	}
	return len(neg) == 0 || !slices.ContainsFunc(vals, func(v string) bool { return anyMatch(neg, v) })
}

func blockMatch(pos, neg []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	in := func(list []netip.Prefix) bool {
		for _, p := range list {
			if a.IsValid() && p.Contains(a) {
				return true
			}
		}
		return false
	}
	if len(pos) > 0 && !in(pos) {
		return false
	}
	return len(neg) == 0 || !in(neg)
}

func portMatch(pos, neg []int, port int) bool {
	if len(pos) > 0 && !slices.Contains(pos, port) {
		return false
	}
	return len(neg) == 0 || !slices.Contains(neg, port)
}

func (o *operation) match(v *view) bool {
	if len(o.hosts)+len(o.notHosts) > 0 {
		h := v.host
		if !listMatch(o.hosts, o.notHosts, h) {
			if bare := stripPort(h); bare == h || !listMatch(o.hosts, o.notHosts, bare) {
				return false
			}
		}
	}
	return portMatch(o.ports, o.notPorts, v.r.Port) &&
		listMatch(o.methods, o.notMethods, v.r.Method) &&
		listMatch(o.paths, o.notPaths, v.path)
}

func (c *condition) match(v *view) bool {
	switch c.kind {
	case condHeader:
		var val string
		if v.r.Headers != nil {
			val, _ = v.r.Headers.Get(c.header)
		}
		return listMatch(c.values, c.nots, val)
	case condPrincipal:
		return listMatch(c.values, c.nots, v.r.Principal)
	case condNamespace:
		return listMatch(c.values, c.nots, v.namespace)
	case condIP:
		return blockMatch(c.blocks, c.notBlocks, v.r.SourceIP)
	case condAuthPrincipal:
		return listMatch(c.values, c.nots, v.r.Auth.principal())
	case condAuthPresenter:
		var p string
		if v.r.Auth != nil {
			p = v.r.Auth.Presenter
		}
		return listMatch(c.values, c.nots, p)
	case condAuthAudiences:
		var aud []string
		if v.r.Auth != nil {
			aud = v.r.Auth.Audiences
		}
		return valuesMatch(c.values, c.nots, aud)
	case condAuthClaim:
		return valuesMatch(c.values, c.nots, v.r.Auth.claim(c.claim))
	}
	return portMatch(c.ports, c.notPorts, v.r.Port)
}
