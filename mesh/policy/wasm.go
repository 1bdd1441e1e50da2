package policy

import (
	"cmp"
	"slices"
	"strings"

	"github.com/wasmgate/wasmgate/config"
)

// WasmMode is the side of a sidecar a WasmPlugin filters.
type WasmMode string

// The modes of a WasmPlugin, Istio's SERVER and CLIENT (accepted too).
const (
	// WasmInbound filters the requests peers send the service, after the
	// mesh policy admitted them.
	WasmInbound WasmMode = "inbound"
	// WasmOutbound filters the calls the service's app makes.
	WasmOutbound WasmMode = "outbound"
)

// WasmType is what a WasmPlugin filters, Istio's PluginType.
type WasmType string

// The types of a WasmPlugin (Istio's HTTP and NETWORK accepted too).
const (
	// WasmHTTP filters the requests of HTTP services: an HTTP filter.
	WasmHTTP WasmType = "http"
	// WasmNetwork filters the connections of TCP services (protocol
	// tcp), byte for byte, as Envoy's network Wasm filter before
	// tcp_proxy: inbound, those of peers the policy admitted to a TCP
	// app; outbound, those of the app to TCP services.
	WasmNetwork WasmType = "network"
)

// WasmPlugin runs a proxy-wasm filter in the sidecars of a namespace, of
// one service, or of the whole mesh (RootNamespace), as Istio's
// WasmPlugin does. Its module is a blob of the control plane, named by
// its digest (`wasmgate ctl plugin push FILE` stores one and prints it);
// a sidecar fetches it through the control plane's API with its workload
// certificate.
type WasmPlugin struct {
	Name      string `json:"name" yaml:"name"`
	Namespace string `json:"namespace" yaml:"namespace"`
	// Service, when set, narrows it to one service of the namespace.
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	// Mode is inbound (the default) or outbound.
	Mode WasmMode `json:"mode,omitempty" yaml:"mode,omitempty"`
	// Type is http (the default) or network.
	Type WasmType `json:"type,omitempty" yaml:"type,omitempty"`
	// Priority orders the plugins of one mode of a sidecar: higher runs
	// first, as in Istio; then by name.
	Priority int `json:"priority,omitempty" yaml:"priority,omitempty"`
	// SHA256 is the module's digest, lowercase hex.
	SHA256 string `json:"sha256" yaml:"sha256"`
	// RootID, Config and FailurePolicy are the plugin's, as in a
	// proxy's configuration.
	RootID        string           `json:"root_id,omitempty" yaml:"root_id,omitempty"`
	Config        config.RawConfig `json:"config,omitempty" yaml:"config,omitempty"`
	FailurePolicy string           `json:"failure_policy,omitempty" yaml:"failure_policy,omitempty"`
}

// Normalize spells the mode and the type in their canonical lower case
// (Istio's SERVER and CLIENT become inbound and outbound, HTTP and
// NETWORK http and network) and fills in inbound and http, in place.
func (p *WasmPlugin) Normalize() {
	switch t := WasmType(strings.ToLower(string(p.Type))); t {
	case "", "unspecified_plugin_type":
		p.Type = WasmHTTP
	default:
		p.Type = t
	}
	switch m := WasmMode(strings.ToLower(string(p.Mode))); m {
	case "", "server":
		p.Mode = WasmInbound
	case "client":
		p.Mode = WasmOutbound
	default:
		p.Mode = m
	}
}

// Validate checks one plugin on its own; its errors are a config.Errors
// whose paths start inside it ("sha256"). That its module is stored is
// the control plane's check.
func (p *WasmPlugin) Validate() error {
	c := &checker{}
	checkScope(c, "", p.Name, p.Namespace, p.Service)
	switch p.Mode {
	case WasmInbound, WasmOutbound:
	default:
		c.add("mode", "%q is not a mode (want inbound or outbound)", p.Mode)
	}
	switch p.Type {
	case WasmHTTP, WasmNetwork:
	default:
		c.add("type", "%q is not a type (want http or network)", p.Type)
	}
	switch {
	case p.SHA256 == "":
		c.add("sha256", "is required: the digest of a module the control plane holds (wasmgate ctl plugin push FILE)")
	case !config.IsSHA256(p.SHA256):
		c.add("sha256", "must be 64 lowercase hex digits")
	}
	switch p.FailurePolicy {
	case "", config.FailClosed, config.FailOpen, config.FailReload:
	default:
		c.add("failure_policy", "unknown policy %q (want fail_closed, fail_open or reload)", p.FailurePolicy)
	}
	return c.err()
}

// PluginName is the name of the plugin a sidecar's configuration gives
// the WasmPlugin: "mesh." and its name, apart from the sidecar's own.
func (p *WasmPlugin) PluginName() string { return "mesh." + p.Name }

// appliesTo reports whether a resource of scope (scopeNS, scopeService)
// applies to the sidecars of service in namespace: it is the mesh's, or
// the namespace's, or the service's.
func appliesTo(scopeNS, scopeService, namespace, service string) bool {
	return scopeNS == RootNamespace || scopeNS == namespace && (scopeService == "" || scopeService == service)
}

// WasmFor returns the plugins of list that run in a sidecar of the
// service, in the order they run: inbound ones, then outbound ones, each
// by priority (higher first), then by name. Invalid ones are left out.
func WasmFor(list []WasmPlugin, namespace, service string) []WasmPlugin {
	var out []WasmPlugin
	for _, p := range list {
		p.Normalize()
		if p.Validate() != nil {
			continue
		}
		if appliesTo(p.Namespace, p.Service, namespace, service) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b WasmPlugin) int {
		if a.Mode != b.Mode {
			return cmp.Compare(a.Mode, b.Mode) // inbound before outbound
		}
		if a.Priority != b.Priority {
			return cmp.Compare(b.Priority, a.Priority)
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out
}
