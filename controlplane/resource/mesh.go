package resource

import (
	"fmt"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// Check validates the resources of the mesh kinds in a set, which
// config.Config.Validate does not see: each policy on its own, and, across
// the set, that no two peer authentications (or outbound traffic
// policies) set the mode of one scope. It
// returns the problems of each invalid resource, with paths inside it;
// the set is valid when the map is empty. Resources are checked as they
// are (call Normalize first).
func Check(s Set) map[Ref]config.Errors {
	out := map[Ref]config.Errors{}
	scopes := map[[2]string]string{}
	outScopes := map[[2]string]string{}
	routed := map[string]string{}
	for _, r := range s.Refs() {
		var err error
		switch v := s[r].(type) {
		case *policy.AuthorizationPolicy:
			err = v.Validate()
		case *policy.PeerAuthentication:
			err = v.Validate()
			if err == nil {
				scope := [2]string{v.Namespace, v.Service}
				if first, dup := scopes[scope]; dup {
					err = config.Errors{{Path: "service", Msg: fmt.Sprintf("%s already sets the mode of %s; one peer authentication per namespace or service", Ref{PeerAuthentications, first}, scopeOf(v.Namespace, v.Service))}}
				} else {
					scopes[scope] = r.Name
				}
			}
		case *policy.WasmPlugin:
			err = v.Validate()
		case *policy.ServiceEntry:
			err = v.Validate()
		case *policy.RequestAuthentication:
			err = v.Validate()
		case *policy.RateLimitPolicy:
			err = v.Validate()
		case *policy.ServiceRoute:
			err = v.Validate()
			if err == nil {
				if first, dup := routed[v.Target()]; dup {
					err = config.Errors{{Path: "service", Msg: fmt.Sprintf("%s already routes the calls to %s; one service route per service", Ref{ServiceRoutes, first}, scopeOf(v.Namespace, v.Service))}}
				} else {
					routed[v.Target()] = r.Name
				}
			}
		case *policy.OutboundTrafficPolicy:
			err = v.Validate()
			if err == nil {
				scope := [2]string{v.Namespace, v.Service}
				if first, dup := outScopes[scope]; dup {
					err = config.Errors{{Path: "service", Msg: fmt.Sprintf("%s already sets the outbound mode of %s; one outbound traffic policy per namespace or service", Ref{OutboundTrafficPolicies, first}, scopeOf(v.Namespace, v.Service))}}
				} else {
					outScopes[scope] = r.Name
				}
			}
		default:
			continue
		}
		if err == nil {
			continue
		}
		list, ok := err.(config.Errors)
		if !ok {
			list = config.Errors{{Msg: err.Error()}}
		}
		out[r] = list
	}
	return out
}

func scopeOf(namespace, service string) string {
	if service == "" {
		return "namespace " + namespace
	}
	return "service " + namespace + "/" + service
}

// Policies returns the mesh policies of a set, sorted by name.
func Policies(s Set) ([]policy.AuthorizationPolicy, []policy.PeerAuthentication) {
	var aps []policy.AuthorizationPolicy
	var pas []policy.PeerAuthentication
	for _, r := range s.Refs() {
		switch v := s[r].(type) {
		case *policy.AuthorizationPolicy:
			aps = append(aps, *v)
		case *policy.PeerAuthentication:
			pas = append(pas, *v)
		}
	}
	return aps, pas
}
