package policy

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/wasmgate/wasmgate/config"
)

var (
	namePattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$`)
	labelPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

// checker collects field errors.
type checker struct{ list config.Errors }

func (c *checker) add(path, format string, args ...any) {
	c.list = append(c.list, &config.FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// addAll adds the errors of err, a config.Errors whose paths start
// inside what is at path, under path.
func (c *checker) addAll(path string, err error) {
	list, _ := err.(config.Errors)
	for _, fe := range list {
		p := path
		if fe.Path != "" {
			p = field(path, fe.Path)
		}
		c.list = append(c.list, &config.FieldError{Path: p, Msg: fe.Msg})
	}
}

func (c *checker) err() error {
	if len(c.list) == 0 {
		return nil
	}
	return c.list
}

func at(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func field(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// Validate checks every field of the policy. It returns nil or a
// config.Errors whose paths are relative to the policy
// ("rules[0].from[1].principals[0]"). Call Normalize first: it accepts
// only the canonical, lower-case action.
func (p *AuthorizationPolicy) Validate() error {
	c := &checker{}
	p.check(c, "")
	return c.err()
}

func (p *AuthorizationPolicy) check(c *checker, path string) {
	checkScope(c, path, p.Name, p.Namespace, p.Service)
	switch p.Action {
	case "", Allow, Deny, Audit:
	default:
		c.add(field(path, "action"), "%q is not an action (want allow, deny or audit)", p.Action)
	}
	for i, r := range p.Rules {
		rp := at(field(path, "rules"), i)
		for j, s := range r.From {
			s.check(c, at(field(rp, "from"), j))
		}
		for j, o := range r.To {
			o.check(c, at(field(rp, "to"), j))
		}
		for j, w := range r.When {
			w.check(c, at(field(rp, "when"), j))
		}
	}
}

func checkScope(c *checker, path, name, namespace, service string) {
	switch {
	case name == "":
		c.add(field(path, "name"), "is required")
	case !namePattern.MatchString(name):
		c.add(field(path, "name"), "%q is not a valid name (letters, digits, '_', '.', '-'; at most 128; starting with a letter or digit)", name)
	}
	switch {
	case namespace == "":
		c.add(field(path, "namespace"), "is required (%s for the whole mesh)", RootNamespace)
	case !labelPattern.MatchString(namespace):
		c.add(field(path, "namespace"), "%q is not a namespace (lower-case letters, digits and '-'; at most 63)", namespace)
	}
	if service != "" {
		switch {
		case !labelPattern.MatchString(service):
			c.add(field(path, "service"), "%q is not a service name (lower-case letters, digits and '-'; at most 63)", service)
		case namespace == RootNamespace:
			c.add(field(path, "service"), "must be empty in the root namespace %s, whose policies apply to every service", RootNamespace)
		}
	}
}

func (s *Source) check(c *checker, path string) {
	if len(s.Principals)+len(s.NotPrincipals)+len(s.Namespaces)+len(s.NotNamespaces)+len(s.IPBlocks)+len(s.NotIPBlocks)+
		len(s.RequestPrincipals)+len(s.NotRequestPrincipals) == 0 {
		c.add(path, "sets no field; leave the source out to match every peer")
	}
	for _, nl := range []named{{"principals", s.Principals}, {"not_principals", s.NotPrincipals}} {
		name, list := nl.name, nl.list
		for i, v := range list {
			checkPrincipal(c, at(field(path, name), i), v)
		}
	}
	for _, nl := range []named{{"namespaces", s.Namespaces}, {"not_namespaces", s.NotNamespaces}} {
		name, list := nl.name, nl.list
		for i, v := range list {
			checkPattern(c, at(field(path, name), i), v, checkLabelChars)
		}
	}
	for _, nl := range []named{{"request_principals", s.RequestPrincipals}, {"not_request_principals", s.NotRequestPrincipals}} {
		name, list := nl.name, nl.list
		for i, v := range list {
			checkPattern(c, at(field(path, name), i), v, checkValueChars)
		}
	}
	for _, nl := range []named{{"ip_blocks", s.IPBlocks}, {"not_ip_blocks", s.NotIPBlocks}} {
		name, list := nl.name, nl.list
		for i, v := range list {
			if _, err := parseBlock(v); err != nil {
				c.add(at(field(path, name), i), "%v", err)
			}
		}
	}
}

func (o *Operation) check(c *checker, path string) {
	if len(o.Hosts)+len(o.NotHosts)+len(o.Ports)+len(o.NotPorts)+len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths) == 0 {
		c.add(path, "sets no field; leave the operation out to match every request")
	}
	for _, nl := range []named{{"hosts", o.Hosts}, {"not_hosts", o.NotHosts}} {
		name, list := nl.name, nl.list
		for i, v := range list {
			checkPattern(c, at(field(path, name), i), v, checkHostChars)
		}
	}
	for _, nl := range []namedPorts{{"ports", o.Ports}, {"not_ports", o.NotPorts}} {
		name, list := nl.name, nl.list
		for i, v := range list {
			if v <= 0 || v > 65535 {
				c.add(at(field(path, name), i), "%d is not a port (1 to 65535)", v)
			}
		}
	}
	for _, nl := range []named{{"methods", o.Methods}, {"not_methods", o.NotMethods}} {
		name, list := nl.name, nl.list
		for i, v := range list {
			checkPattern(c, at(field(path, name), i), v, checkMethodChars)
		}
	}
	for _, nl := range []named{{"paths", o.Paths}, {"not_paths", o.NotPaths}} {
		name, list := nl.name, nl.list
		for i, v := range list {
			checkPattern(c, at(field(path, name), i), v, checkPathChars)
		}
	}
}

// conditionKeys are the attributes a condition may name, besides
// request.headers[NAME].
var conditionKeys = []string{"source.principal", "source.namespace", "source.ip", "destination.port",
	"request.auth.principal", "request.auth.audiences", "request.auth.presenter"}

func (w *Condition) check(c *checker, path string) {
	kp := field(path, "key")
	header, isHeader := headerKey(w.Key)
	claim, isClaim := claimKey(w.Key)
	switch {
	case w.Key == "":
		c.add(kp, "is required")
		return
	case isHeader:
		if !validHeaderName(header) {
			c.add(kp, "%q does not name a valid header", w.Key)
			return
		}
	case isClaim:
		if slices.Contains(claim, "") {
			c.add(kp, "%q names an empty claim", w.Key)
			return
		}
	case !contains(conditionKeys, w.Key):
		c.add(kp, "%q is not a supported key (want request.headers[NAME], request.auth.claims[NAME], %s)", w.Key, strings.Join(conditionKeys, ", "))
		return
	}
	if len(w.Values)+len(w.NotValues) == 0 {
		c.add(path, "sets neither values nor not_values")
	}
	for _, nl := range []named{{"values", w.Values}, {"not_values", w.NotValues}} {
		name, list := nl.name, nl.list
		for i, v := range list {
			vp := at(field(path, name), i)
			switch w.Key {
			case "source.principal":
				checkPrincipal(c, vp, v)
			case "source.namespace":
				checkPattern(c, vp, v, checkLabelChars)
			case "source.ip":
				if _, err := parseBlock(v); err != nil {
					c.add(vp, "%v", err)
				}
			case "destination.port":
				if n, err := strconv.Atoi(v); err != nil || n <= 0 || n > 65535 {
					c.add(vp, "%q is not a port (1 to 65535)", v)
				}
			default:
				checkPattern(c, vp, v, checkValueChars)
			}
		}
	}
}

type named struct {
	name string
	list []string
}

type namedPorts struct {
	name string
	list []int
}

// claimKey returns the path of "request.auth.claims[A]" ([A]) or of a
// nested claim, "request.auth.claims[A][B]" ([A B]).
func claimKey(key string) ([]string, bool) {
	rest, ok := strings.CutPrefix(key, "request.auth.claims[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return nil, false
	}
	return strings.Split(rest[:len(rest)-1], "]["), true
}

// headerKey returns NAME of "request.headers[NAME]".
func headerKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "request.headers[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return "", false
	}
	return rest[:len(rest)-1], true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// checkPattern checks a pattern: exact, "x*", "*x" or "*", where the
// literal part passes chars.
func checkPattern(c *checker, path, v string, chars func(string) error) {
	if v == "" {
		c.add(path, "is empty (use \"*\" for any value)")
		return
	}
	lit := v
	switch {
	case v == "*":
		return
	case strings.HasPrefix(v, "*"):
		lit = v[1:]
	case strings.HasSuffix(v, "*"):
		lit = v[:len(v)-1]
	}
	if strings.Contains(lit, "*") {
		c.add(path, "%q has a '*' inside; a pattern is exact, \"prefix*\", \"*suffix\" or \"*\"", v)
		return
	}
	if err := chars(lit); err != nil {
		c.add(path, "%q %v", v, err)
	}
}

func checkPrincipal(c *checker, path, v string) {
	n := len(c.list)
	checkPattern(c, path, v, checkValueChars)
	if len(c.list) > n || strings.Contains(v, "*") {
		return
	}
	if _, _, _, ok := ParseSPIFFE(canonicalPrincipal(v)); !ok {
		c.add(path, "%q is not a SPIFFE ID of a workload (spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT)", v)
	}
}

func checkLabelChars(s string) error {
	for i := 0; i < len(s); i++ {
		if b := s[i]; !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-') {
			return fmt.Errorf("has %q; a namespace has lower-case letters, digits and '-'", b)
		}
	}
	return nil
}

func checkHostChars(s string) error {
	for i := 0; i < len(s); i++ {
		if b := s[i]; !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '.' || b == ':' || b == '[' || b == ']') {
			return fmt.Errorf("has %q, which no host name has", b)
		}
	}
	return nil
}

func checkMethodChars(s string) error {
	for i := 0; i < len(s); i++ {
		if b := s[i]; !(b >= 'A' && b <= 'Z' || b == '-' || b == '_') {
			return fmt.Errorf("is not an upper-case method name (GET, POST, ...)")
		}
	}
	return nil
}

func checkPathChars(s string) error {
	if s != "" && s[0] != '/' && s[0] != '.' {
		// A suffix ("*.html") may start anywhere; an exact path or a
		// prefix starts with '/'.
		return fmt.Errorf("does not start with '/'")
	}
	if strings.ContainsAny(s, "?# ") || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("has a query, a fragment, a space or a control character")
	}
	return nil
}

func checkValueChars(s string) error {
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("has a control character")
	}
	return nil
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// parseBlock parses an address or a CIDR prefix.
func parseBlock(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or a CIDR prefix", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or a CIDR prefix", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Validate checks every field of the peer authentication. Call Normalize
// first.
func (p *PeerAuthentication) Validate() error {
	c := &checker{}
	checkScope(c, "", p.Name, p.Namespace, p.Service)
	checkMode := func(path string, m Mode, emptyOK bool) {
		switch {
		case m == Strict || m == Permissive:
		case m == "" && emptyOK:
		default:
			c.add(path, "%q is not a mode (want strict or permissive)", m)
		}
	}
	checkMode("mode", p.Mode, true)
	if len(p.PortLevel) > 0 && p.Service == "" {
		c.add("port_level", "needs service: ports belong to one service")
	}
	for _, port := range sortedPorts(p.PortLevel) {
		path := fmt.Sprintf("port_level[%d]", port)
		if port <= 0 || port > 65535 {
			c.add(path, "%d is not a port (1 to 65535)", port)
		}
		checkMode(path, p.PortLevel[port], false)
	}
	return c.err()
}
