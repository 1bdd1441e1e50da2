// Package policy is the mesh's zero-trust policy: who may call whom
// (AuthorizationPolicy) and whether a service's inbound requires mutual TLS
// (PeerAuthentication). It holds the schema of both resources as the
// control plane stores them, their validation with errors that name the
// field path, and a compiled, allocation-free evaluator that a sidecar
// runs on every inbound request.
//
// The semantics follow Istio's AuthorizationPolicy and PeerAuthentication;
// docs/mesh-policy.md maps one to the other field by field.
//
// Evaluation, for one destination service:
//
//  1. If any DENY policy that applies to it matches, the request is denied.
//  2. If no ALLOW policy applies to it, the request is allowed.
//  3. If any ALLOW policy that applies to it matches, it is allowed.
//  4. Otherwise it is denied.
//
// AUDIT policies never change the decision; the first one that matches is
// named in it, so that the caller logs the request.
//
// A policy applies to a destination when it is in the destination's
// namespace and names no service or names the destination's service, or
// when it is in the root namespace (mesh-wide). A policy matches when one of
// its rules matches; a rule matches when every one of its parts (from, to,
// when) that is present matches.
package policy

import (
	"strings"
)

// Action is what a policy does with the requests its rules match.
type Action string

// The actions of an AuthorizationPolicy.
const (
	// Allow admits matching requests; once one ALLOW policy applies to a
	// destination, requests that match none are denied.
	Allow Action = "allow"
	// Deny refuses matching requests; it wins over every ALLOW.
	Deny Action = "deny"
	// Audit marks matching requests for the decision log only.
	Audit Action = "audit"
)

// RootNamespace is the namespace whose policies apply to every service of
// the mesh (Istio's istio-system).
const RootNamespace = "wasmgate-system"

// AuthorizationPolicy says which requests may reach the services of a
// namespace, or one service of it.
type AuthorizationPolicy struct {
	// Name names the resource in the control plane.
	Name string `json:"name" yaml:"name"`
	// Namespace is the namespace of the services it protects;
	// RootNamespace makes it apply to every service of the mesh.
	Namespace string `json:"namespace" yaml:"namespace"`
	// Service, when set, narrows it to one service of the namespace.
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	// Action is allow (the default), deny or audit. Istio's upper-case
	// spelling is accepted.
	Action Action `json:"action,omitempty" yaml:"action,omitempty"`
	// Rules are alternatives: the policy matches a request that one of them
	// matches. An ALLOW policy without rules matches nothing, so it denies
	// every request to the services it applies to (deny-all); a rule with
	// no parts ({}) matches every request.
	Rules []Rule `json:"rules,omitempty" yaml:"rules,omitempty"`
}

// Rule matches a request when each of its parts that is present matches.
type Rule struct {
	// From matches the source: one of them must match.
	From []Source `json:"from,omitempty" yaml:"from,omitempty"`
	// To matches the operation: one of them must match.
	To []Operation `json:"to,omitempty" yaml:"to,omitempty"`
	// When adds conditions: every one of them must hold.
	When []Condition `json:"when,omitempty" yaml:"when,omitempty"`
}

// Source matches the peer of a request; every field that is set must
// match. Values are patterns: "abc" exact, "abc*" prefix, "*abc" suffix,
// "*" any non-empty value.
type Source struct {
	// Principals are SPIFFE IDs of the peer's certificate,
	// "spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"; Istio's
	// form without "spiffe://" is accepted.
	Principals    []string `json:"principals,omitempty" yaml:"principals,omitempty"`
	NotPrincipals []string `json:"not_principals,omitempty" yaml:"not_principals,omitempty"`
	// Namespaces are the namespace of the peer's SPIFFE ID.
	Namespaces    []string `json:"namespaces,omitempty" yaml:"namespaces,omitempty"`
	NotNamespaces []string `json:"not_namespaces,omitempty" yaml:"not_namespaces,omitempty"`
	// IPBlocks are addresses or CIDR prefixes of the peer.
	IPBlocks    []string `json:"ip_blocks,omitempty" yaml:"ip_blocks,omitempty"`
	NotIPBlocks []string `json:"not_ip_blocks,omitempty" yaml:"not_ip_blocks,omitempty"`
	// RequestPrincipals are the request's end-user identity from a JSON
	// Web Token that a RequestAuthentication verified, "ISSUER/SUBJECT";
	// "*" is any verified token.
	RequestPrincipals    []string `json:"request_principals,omitempty" yaml:"request_principals,omitempty"`
	NotRequestPrincipals []string `json:"not_request_principals,omitempty" yaml:"not_request_principals,omitempty"`
}

// Operation matches what a request does; every field that is set must
// match. Hosts, methods and paths are patterns as in Source; hosts match
// without regard to case, methods and paths exactly. Paths match the
// request's path without its query.
type Operation struct {
	Hosts      []string `json:"hosts,omitempty" yaml:"hosts,omitempty"`
	NotHosts   []string `json:"not_hosts,omitempty" yaml:"not_hosts,omitempty"`
	Ports      []int    `json:"ports,omitempty" yaml:"ports,omitempty"`
	NotPorts   []int    `json:"not_ports,omitempty" yaml:"not_ports,omitempty"`
	Methods    []string `json:"methods,omitempty" yaml:"methods,omitempty"`
	NotMethods []string `json:"not_methods,omitempty" yaml:"not_methods,omitempty"`
	Paths      []string `json:"paths,omitempty" yaml:"paths,omitempty"`
	NotPaths   []string `json:"not_paths,omitempty" yaml:"not_paths,omitempty"`
}

// Condition matches one attribute of a request against patterns. Key is
// one of request.headers[NAME], source.principal, source.namespace,
// source.ip, destination.port. Values or NotValues (or both) must be set.
type Condition struct {
	Key       string   `json:"key" yaml:"key"`
	Values    []string `json:"values,omitempty" yaml:"values,omitempty"`
	NotValues []string `json:"not_values,omitempty" yaml:"not_values,omitempty"`
}

// Mode is how a service's inbound listener treats plain-text peers.
type Mode string

// The modes of a PeerAuthentication.
const (
	// Strict accepts only mutual TLS with a certificate of the mesh.
	Strict Mode = "strict"
	// Permissive accepts mutual TLS and plain text, for a migration.
	Permissive Mode = "permissive"
)

// DefaultMode is the mode of a service no PeerAuthentication covers.
const DefaultMode = Strict

// PeerAuthentication sets the mutual TLS mode of the services of a
// namespace, or of one service, or of the whole mesh (RootNamespace).
type PeerAuthentication struct {
	Name      string `json:"name" yaml:"name"`
	Namespace string `json:"namespace" yaml:"namespace"`
	// Service, when set, narrows it to one service of the namespace.
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	// Mode is strict or permissive (Istio's STRICT and PERMISSIVE are
	// accepted); empty inherits from the wider scope.
	Mode Mode `json:"mode,omitempty" yaml:"mode,omitempty"`
	// PortLevel overrides the mode for some of the service's inbound
	// ports; it needs Service.
	PortLevel map[int]Mode `json:"port_level,omitempty" yaml:"port_level,omitempty"`
}

// Normalize spells the action in its canonical lower case (Istio's ALLOW
// becomes allow) and fills in the default, allow, in place.
func (p *AuthorizationPolicy) Normalize() {
	p.Action = Action(strings.ToLower(string(p.Action)))
	if p.Action == "" {
		p.Action = Allow
	}
}

// Normalize spells the modes in their canonical lower case, in place.
func (p *PeerAuthentication) Normalize() {
	p.Mode = Mode(strings.ToLower(string(p.Mode)))
	for port, m := range p.PortLevel {
		p.PortLevel[port] = Mode(strings.ToLower(string(m)))
	}
}

// Scope is the namespace and the service (empty: every service of the
// namespace) a resource of the mesh applies to; its name is the third
// part of what names it.
func (p *AuthorizationPolicy) Scope() (namespace, service, name string) {
	return p.Namespace, p.Service, p.Name
}

// Scope is as AuthorizationPolicy's.
func (p *PeerAuthentication) Scope() (namespace, service, name string) {
	return p.Namespace, p.Service, p.Name
}

// Scope is as AuthorizationPolicy's.
func (p *OutboundTrafficPolicy) Scope() (namespace, service, name string) {
	return p.Namespace, p.Service, p.Name
}

// Scope is as AuthorizationPolicy's.
func (p *WasmPlugin) Scope() (namespace, service, name string) {
	return p.Namespace, p.Service, p.Name
}
