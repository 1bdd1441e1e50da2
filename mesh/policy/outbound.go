package policy

import (
	"cmp"
	"slices"
	"strings"
)

// OutboundMode is what a sidecar does with a call from its app to a
// destination outside the mesh: a name or address that is no service of
// the registry.
type OutboundMode string

// The modes of an OutboundTrafficPolicy, as Istio's outboundTrafficPolicy
// names them (REGISTRY_ONLY and ALLOW_ANY are accepted).
const (
	// RegistryOnly refuses it: an HTTP call is answered 502, any other
	// connection is closed.
	RegistryOnly OutboundMode = "registry_only"
	// AllowAny passes it on, unencrypted, to where the app sent it.
	AllowAny OutboundMode = "allow_any"
)

// OutboundTrafficPolicy sets the outbound mode of the sidecars of a
// namespace, or of one service, or of the whole mesh (RootNamespace). A
// sidecar no policy covers keeps its own outbound_policy setting.
type OutboundTrafficPolicy struct {
	Name      string `json:"name" yaml:"name"`
	Namespace string `json:"namespace" yaml:"namespace"`
	// Service, when set, narrows it to one service of the namespace.
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	// Mode is registry_only or allow_any.
	Mode OutboundMode `json:"mode" yaml:"mode"`
}

// Normalize spells the mode in its canonical lower case, in place.
func (p *OutboundTrafficPolicy) Normalize() {
	p.Mode = OutboundMode(strings.ToLower(string(p.Mode)))
}

// Validate checks one policy on its own; its errors are a config.Errors
// whose paths start inside it ("mode").
func (p *OutboundTrafficPolicy) Validate() error {
	c := &checker{}
	checkScope(c, "", p.Name, p.Namespace, p.Service)
	switch p.Mode {
	case RegistryOnly, AllowAny:
	case "":
		c.add("mode", "is required (registry_only or allow_any)")
	default:
		c.add("mode", "%q is not an outbound mode (want registry_only or allow_any)", p.Mode)
	}
	return c.err()
}

// OutboundResolution is an outbound mode and the policy that set it.
type OutboundResolution struct {
	Mode   OutboundMode
	Source string
}

// OutboundFor returns the outbound mode of one service from a set of
// policies: the service's own, else its namespace's, else the mesh's
// (RootNamespace); at one scope the first by name. ok is false when none
// covers it. Invalid policies are skipped.
func OutboundFor(list []OutboundTrafficPolicy, namespace, service string) (r OutboundResolution, ok bool) {
	sorted := slices.Clone(list)
	slices.SortFunc(sorted, func(a, b OutboundTrafficPolicy) int { return cmp.Compare(a.Name, b.Name) })
	scopes := [][2]string{{namespace, ""}, {RootNamespace, ""}}
	if service != "" {
		scopes = append([][2]string{{namespace, service}}, scopes...)
	}
	for _, scope := range scopes {
		for i := range sorted {
			p := &sorted[i]
			p.Normalize()
			if p.Namespace == scope[0] && p.Service == scope[1] && p.Validate() == nil {
				return OutboundResolution{Mode: p.Mode, Source: p.Name}, true
			}
		}
	}
	return OutboundResolution{}, false
}
