package policy

import (
	"reflect"
	"time"
	"unsafe"

	"github.com/wasmgate/wasmgate/proxy/ratelimit"
)

// RateLimitPolicy bounds the requests a service's inbound serves, as
// Linkerd's HTTPLocalRateLimitPolicy: all callers together (Total), each
// caller's identity on its own (Identity), and chosen identities at rates
// of their own (Overrides). A request over a limit is answered 429 with
// Retry-After by the service's sidecar, after the authorization policy
// admitted it (a refused caller spends nobody's tokens). Each limit is a
// token bucket that holds one second of its rate.
type RateLimitPolicy struct {
	Name      string `json:"name" yaml:"name"`
	Namespace string `json:"namespace" yaml:"namespace"`
	// Service is the service whose inbound it limits (required).
	Service string `json:"service" yaml:"service"`
	// Total is the rate of every caller together.
	Total *Rate `json:"total,omitempty" yaml:"total,omitempty"`
	// Identity is the rate of each caller identity (its SPIFFE ID;
	// plain-text callers share one bucket), unless an override names it.
	Identity *Rate `json:"identity,omitempty" yaml:"identity,omitempty"`
	// Overrides give the identities they name a rate of their own, each
	// identity its own bucket, in place of Identity's.
	Overrides []RateOverride `json:"overrides,omitempty" yaml:"overrides,omitempty"`
}

// Rate is a number of requests a second.
type Rate struct {
	RequestsPerSecond int `json:"requests_per_second" yaml:"requests_per_second"`
}

// RateOverride is a rate for the callers it names.
type RateOverride struct {
	RequestsPerSecond int `json:"requests_per_second" yaml:"requests_per_second"`
	// Principals are SPIFFE IDs, exactly (Istio's form without
	// "spiffe://" is accepted).
	Principals []string `json:"principals" yaml:"principals"`
}

// maxRate bounds a rate, a million requests a second.
const maxRate = 1_000_000

// Scope implements the scope of a mesh resource.
func (p *RateLimitPolicy) Scope() (namespace, service, name string) {
	return p.Namespace, p.Service, p.Name
}

func (p *RateLimitPolicy) name() string { return p.Name }

// Normalize writes the principals in their canonical form, in place.
func (p *RateLimitPolicy) Normalize() {
	for i := range p.Overrides {
		for j, pr := range p.Overrides[i].Principals {
			p.Overrides[i].Principals[j] = canonicalPrincipal(pr)
		}
	}
}

// Validate checks every field; its errors are a config.Errors whose paths
// start inside the policy ("overrides[0].principals[1]").
func (p *RateLimitPolicy) Validate() error {
	c := &checker{}
	checkScope(c, "", p.Name, p.Namespace, p.Service)
	if p.Service == "" && p.Namespace != "" {
		c.add("service", "is required: the service whose inbound it limits")
	}
	if p.Total == nil && p.Identity == nil && len(p.Overrides) == 0 {
		c.add("total", "is not set, nor identity, nor overrides: the policy limits nothing")
	}
	rate := func(path string, n int) {
		if n < 1 || n > maxRate {
			c.add(path, "must be 1 to %d requests a second, not %d", maxRate, n)
		}
	}
	if p.Total != nil {
		rate("total.requests_per_second", p.Total.RequestsPerSecond)
	}
	if p.Identity != nil {
		rate("identity.requests_per_second", p.Identity.RequestsPerSecond)
	}
	seen := map[string]string{}
	for i, o := range p.Overrides {
		op := at("overrides", i)
		rate(op+".requests_per_second", o.RequestsPerSecond)
		if len(o.Principals) == 0 {
			c.add(op+".principals", "is empty: name the callers the rate is for")
		}
		for j, pr := range o.Principals {
			pp := at(op+".principals", j)
			if _, _, _, ok := ParseSPIFFE(pr); !ok {
				c.add(pp, "%q is not a workload SPIFFE ID (spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT)", pr)
			} else if first, dup := seen[pr]; dup {
				c.add(pp, "%q is also %s's", pr, first)
			} else {
				seen[pr] = pp
			}
		}
	}
	return c.err()
}

// limits are a service's rate limit policies, compiled: their buckets.
type limits struct {
	policies []limitPolicy
}

type limitPolicy struct {
	cfg       RateLimitPolicy
	total     *ratelimit.Limiter
	identity  *ratelimit.Limiter
	overrides map[string]*ratelimit.Limiter // by principal
}

// identityKeys bounds the callers whose buckets an identity limit keeps;
// past it the least recently refilled are forgotten.
const identityKeys = 1 << 16

// newBucket holds one second of rate: a burst of rate, refilled one
// token every 1/rate s; with keys, a bucket per key, up to keys of them.
func newBucket(rate, keys int) *ratelimit.Limiter {
	fill, per := time.Second, rate
	if rate >= 1000 {
		fill, per = time.Millisecond, rate/1000
	}
	return ratelimit.New(ratelimit.Config{MaxTokens: rate, TokensPerFill: max(per, 1), FillInterval: fill, MaxKeys: keys})
}

// compileLimits makes the buckets of list, keeping those of old whose
// policy did not change.
func compileLimits(list []RateLimitPolicy, old *limits) *limits {
	if len(list) == 0 {
		return nil
	}
	out := &limits{}
	for _, p := range list {
		if old != nil {
			if i := indexOf(old.policies, p); i >= 0 {
				out.policies = append(out.policies, old.policies[i])
				continue
			}
		}
		lp := limitPolicy{cfg: p}
		if p.Total != nil {
			lp.total = newBucket(p.Total.RequestsPerSecond, 0)
		}
		if p.Identity != nil {
			lp.identity = newBucket(p.Identity.RequestsPerSecond, identityKeys)
		}
		for _, o := range p.Overrides {
			for _, pr := range o.Principals {
				if lp.overrides == nil {
					lp.overrides = map[string]*ratelimit.Limiter{}
				}
				lp.overrides[pr] = newBucket(o.RequestsPerSecond, 0)
			}
		}
		out.policies = append(out.policies, lp)
	}
	return out
}

func indexOf(list []limitPolicy, p RateLimitPolicy) int {
	for i := range list {
		if reflect.DeepEqual(list[i].cfg, p) {
			return i
		}
	}
	return -1
}

// unsafeBytes views s as bytes for a bucket's key, which is hashed and
// not kept.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// allow takes a token for a request of principal from every bucket it
// counts against, and returns the first refusal, if any. The caller's
// own bucket comes first, so that a caller over its rate spends none of
// the total's.
func (l *limits) allow(principal string) (ratelimit.Decision, string) {
	for i := range l.policies {
		p := &l.policies[i]
		if b, ok := p.overrides[principal]; ok {
			if d := b.Allow(); !d.Allowed {
				return d, p.cfg.Name
			}
		} else if p.identity != nil {
			if d := p.identity.AllowKey(unsafeBytes(principal)); !d.Allowed {
				return d, p.cfg.Name
			}
		}
		if p.total != nil {
			if d := p.total.Allow(); !d.Allowed {
				return d, p.cfg.Name
			}
		}
	}
	return ratelimit.Decision{Allowed: true}, ""
}
