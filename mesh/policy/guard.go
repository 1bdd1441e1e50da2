package policy

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/wasmgate/wasmgate/proxy/ratelimit"
)

// Guard is one service's policy as its sidecar enforces it: the compiled
// authorization table and mutual TLS modes of that service, swapped whole
// when the policies change, read without a lock by every request. The
// zero value is not usable; call NewGuard.
type Guard struct {
	namespace, service string
	cur                atomic.Pointer[guardState]
	// authn verifies end users' tokens; nil when no request
	// authentication applies to the service.
	authn atomic.Pointer[Authenticator]
	keys  *KeyCache
	// limits are the rate limit policies' buckets; nil when none
	// applies.
	limits atomic.Pointer[limits]
	limMu  sync.Mutex // one LoadRateLimits at a time
}

type guardState struct {
	table    *Table
	modes    *Modes
	revision int64
}

// NewGuard returns the guard of one service. Until the first Load it
// allows every request and requires strict mutual TLS (DefaultMode).
func NewGuard(namespace, service string) *Guard {
	g := &Guard{namespace: namespace, service: service, keys: NewKeyCache(nil)}
	empty, _ := Compile(nil)
	modes, _ := CompileModes(nil)
	g.cur.Store(&guardState{table: empty.For(namespace, service), modes: modes})
	return g
}

// Load compiles a new set of policies (those that apply to the service;
// others are ignored) at a revision and swaps it in. Requests already
// deciding finish on the old one. On an error nothing changes: the guard
// keeps enforcing its last good policies.
func (g *Guard) Load(revision int64, aps []AuthorizationPolicy, pas []PeerAuthentication) error {
	set, err := Compile(aps)
	if err != nil {
		return fmt.Errorf("policies of %s/%s at revision %d: %w", g.namespace, g.service, revision, err)
	}
	modes, err := CompileModes(pas)
	if err != nil {
		return fmt.Errorf("peer authentications of %s/%s at revision %d: %w", g.namespace, g.service, revision, err)
	}
	g.cur.Store(&guardState{table: set.For(g.namespace, g.service), modes: modes, revision: revision})
	return nil
}

// LoadRequestAuthentications swaps in the request authentications that
// apply to the service (of list; others are ignored). An invalid one is
// an error, and nothing changes.
func (g *Guard) LoadRequestAuthentications(list []RequestAuthentication) error {
	var mine []RequestAuthentication
	for _, r := range list {
		r.Normalize()
		if err := r.Validate(); err != nil {
			return fmt.Errorf("request authentication %q of %s/%s: %w", r.Name, g.namespace, g.service, err)
		}
		if appliesTo(r.Namespace, r.Service, g.namespace, g.service) {
			mine = append(mine, r)
		}
	}
	g.authn.Store(NewAuthenticator(mine, g.keys))
	return nil
}

// LoadRateLimits swaps in the rate limit policies of the service (of
// list; others are ignored), keeping the buckets of those that did not
// change. An invalid one is an error, and nothing changes.
func (g *Guard) LoadRateLimits(list []RateLimitPolicy) error {
	var mine []RateLimitPolicy
	for _, p := range list {
		p.Normalize()
		if err := p.Validate(); err != nil {
			return fmt.Errorf("rate limit policy %q of %s/%s: %w", p.Name, g.namespace, g.service, err)
		}
		if p.Namespace == g.namespace && p.Service == g.service {
			mine = append(mine, p)
		}
	}
	g.limMu.Lock()
	defer g.limMu.Unlock()
	g.limits.Store(compileLimits(mine, g.limits.Load()))
	return nil
}

// AllowRate takes a token for a request of principal ("" for a plain-text
// caller) from each bucket it counts against; when one is empty it
// returns the refusal and the policy's name. It does not allocate.
func (g *Guard) AllowRate(principal string) (ratelimit.Decision, string) {
	l := g.limits.Load()
	if l == nil {
		return ratelimit.Decision{Allowed: true}, ""
	}
	return l.allow(principal)
}

// Authenticator returns the service's request authentications in force,
// one snapshot for a whole request; nil when none applies (its methods
// then find no token and no header).
func (g *Guard) Authenticator() *Authenticator { return g.authn.Load() }

// Decide evaluates one inbound request. It does not allocate.
func (g *Guard) Decide(r *Request) Decision { return g.cur.Load().table.Evaluate(r) }

// Mode returns the mutual TLS mode of one of the service's inbound ports.
func (g *Guard) Mode(port int) Resolution {
	return g.cur.Load().modes.For(g.namespace, g.service, port)
}

// Revision is the revision of the policies in force.
func (g *Guard) Revision() int64 { return g.cur.Load().revision }

// Service returns the namespace and name of the service the guard decides for.
func (g *Guard) Service() (namespace, service string) { return g.namespace, g.service }
