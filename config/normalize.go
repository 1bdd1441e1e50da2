package config

import (
	"fmt"
	"strings"
)

// Defaults that Normalize fills in.
const (
	DefaultAdminAddress          = "127.0.0.1:9901"
	DefaultMaxRequestHeaderBytes = 64 << 10
	DefaultRequestIDHeader       = "x-request-id"
)

// Normalize fills in defaults that other fields do not depend on for their
// meaning (names, lowercase header names, upper-case methods). It is
// idempotent and is called by Parse before Validate.
func (c *Config) Normalize() {
	if c.Admin.Address == "" {
		c.Admin.Address = DefaultAdminAddress
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.MaxRequestHeaderBytes == 0 {
			l.MaxRequestHeaderBytes = DefaultMaxRequestHeaderBytes
		}
		if l.RequestIDHeader == "" {
			l.RequestIDHeader = DefaultRequestIDHeader
		}
		l.RequestIDHeader = strings.ToLower(l.RequestIDHeader)
	}
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		if cl.LBPolicy == "" {
			cl.LBPolicy = LBRoundRobin
		}
		if (cl.LBPolicy == LBRingHash || cl.LBPolicy == LBMaglev) && cl.HashPolicy == nil {
			cl.HashPolicy = &HashPolicy{SourceIP: true}
		}
		if cl.HashPolicy != nil {
			cl.HashPolicy.Header = strings.ToLower(cl.HashPolicy.Header)
		}
		for j := range cl.Endpoints {
			if cl.Endpoints[j].Weight == 0 {
				cl.Endpoints[j].Weight = 1
			}
		}
		cl.normalizeResilience()
	}
	for i := range c.VirtualHosts {
		vh := &c.VirtualHosts[i]
		for j := range vh.Domains {
			vh.Domains[j] = strings.ToLower(vh.Domains[j])
		}
		vh.RequestHeaders.normalize()
		vh.ResponseHeaders.normalize()
		normalizeRouteResilience(vh.Retry, vh.RateLimit)
		for j := range vh.Routes {
			r := &vh.Routes[j]
			if r.Name == "" {
				r.Name = fmt.Sprintf("%s-%d", vh.Name, j)
			}
			if r.Match.Path == "" && r.Match.Prefix == "" && r.Match.PathRegex == "" {
				r.Match.Prefix = "/"
			}
			for k := range r.Match.Headers {
				r.Match.Headers[k].Name = strings.ToLower(r.Match.Headers[k].Name)
			}
			for k := range r.Match.Methods {
				r.Match.Methods[k] = strings.ToUpper(r.Match.Methods[k])
			}
			if r.Redirect != nil && r.Redirect.Status == 0 {
				r.Redirect.Status = 301
			}
			r.RequestHeaders.normalize()
			r.ResponseHeaders.normalize()
			normalizeRouteResilience(r.Retry, r.RateLimit)
		}
	}
	for i := range c.Plugins {
		p := &c.Plugins[i]
		if p.FailurePolicy == "" {
			p.FailurePolicy = FailClosed
		}
		p.SHA256 = strings.ToLower(p.SHA256)
	}
}

func (m *HeaderMutation) normalize() {
	for i := range m.Add {
		m.Add[i].Name = strings.ToLower(m.Add[i].Name)
	}
	for i := range m.Set {
		m.Set[i].Name = strings.ToLower(m.Set[i].Name)
	}
	for i := range m.Remove {
		m.Remove[i] = strings.ToLower(m.Remove[i])
	}
}
