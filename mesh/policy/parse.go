package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"

	"github.com/wasmgate/wasmgate/config"
)

// Document is a file of policies, as an operator writes it.
type Document struct {
	AuthorizationPolicies []AuthorizationPolicy `json:"authorization_policies,omitempty" yaml:"authorization_policies,omitempty"`
	PeerAuthentications   []PeerAuthentication  `json:"peer_authentications,omitempty" yaml:"peer_authentications,omitempty"`
	// OutboundTrafficPolicies set what sidecars do with calls outside
	// the mesh.
	OutboundTrafficPolicies []OutboundTrafficPolicy `json:"outbound_traffic_policies,omitempty" yaml:"outbound_traffic_policies,omitempty"`
	// WasmPlugins run proxy-wasm filters in sidecars.
	WasmPlugins []WasmPlugin `json:"wasm_plugins,omitempty" yaml:"wasm_plugins,omitempty"`
	// ServiceRoutes route the calls to a service between its versions.
	ServiceRoutes []ServiceRoute `json:"service_routes,omitempty" yaml:"service_routes,omitempty"`
	// ServiceEntries let sidecars reach hosts outside the mesh.
	ServiceEntries []ServiceEntry `json:"service_entries,omitempty" yaml:"service_entries,omitempty"`
	// RequestAuthentications verify end users' tokens at the inbound of
	// services.
	RequestAuthentications []RequestAuthentication `json:"request_authentications,omitempty" yaml:"request_authentications,omitempty"`
	// RateLimitPolicies bound the requests services' inbounds serve.
	RateLimitPolicies []RateLimitPolicy `json:"rate_limit_policies,omitempty" yaml:"rate_limit_policies,omitempty"`
}

// Parse decodes a document of policies, YAML or JSON, strictly (an
// unknown field is an error), normalizes it and validates it. Its errors
// are a config.Errors whose paths start at the document
// ("authorization_policies[2].rules[0].to[0].paths[1]").
func Parse(data []byte) (*Document, error) {
	doc := &Document{}
	if err := decodeStrict(data, doc); err != nil {
		return nil, err
	}
	var all config.Errors
	all = append(all, checkList("authorization_policies", doc.AuthorizationPolicies)...)
	all = append(all, checkList("peer_authentications", doc.PeerAuthentications)...)
	all = append(all, checkList("outbound_traffic_policies", doc.OutboundTrafficPolicies)...)
	all = append(all, checkList("wasm_plugins", doc.WasmPlugins)...)
	all = append(all, checkList("service_routes", doc.ServiceRoutes)...)
	all = append(all, checkList("service_entries", doc.ServiceEntries)...)
	all = append(all, checkList("request_authentications", doc.RequestAuthentications)...)
	all = append(all, checkList("rate_limit_policies", doc.RateLimitPolicies)...)
	if len(all) > 0 {
		return nil, all
	}
	return doc, nil
}

// resourceOf is a policy kind as a document lists it.
type resourceOf[T any] interface {
	*T
	Normalize()
	Validate() error
	name() string
}

func (p *AuthorizationPolicy) name() string   { return p.Name }
func (p *PeerAuthentication) name() string    { return p.Name }
func (p *OutboundTrafficPolicy) name() string { return p.Name }
func (p *WasmPlugin) name() string            { return p.Name }
func (r *ServiceRoute) name() string          { return r.Name }
func (e *ServiceEntry) name() string          { return e.Name }

// checkList normalizes and validates each policy of one list of a
// document, and refuses a name used twice; paths start at key[i].
func checkList[T any, P resourceOf[T]](key string, list []T) config.Errors {
	var all config.Errors
	names := map[string]int{}
	for i := range list {
		p := P(&list[i])
		p.Normalize()
		path := fmt.Sprintf("%s[%d]", key, i)
		all = append(all, prefixed(path, p.Validate())...)
		all = append(all, duplicate(names, path, p.name(), i)...)
	}
	return all
}

func duplicate(seen map[string]int, path, name string, i int) config.Errors {
	if first, dup := seen[name]; dup && name != "" {
		return config.Errors{{Path: path + ".name", Msg: fmt.Sprintf("duplicate name %q (first at index %d)", name, first)}}
	}
	seen[name] = i
	return nil
}

func prefixed(path string, err error) config.Errors {
	var list config.Errors
	if !errors.As(err, &list) {
		if err != nil {
			return config.Errors{{Path: path, Msg: err.Error()}}
		}
		return nil
	}
	out := make(config.Errors, len(list))
	for i, fe := range list {
		e := *fe
		e.Path = field(path, fe.Path)
		if len(fe.Path) > 0 && fe.Path[0] == '[' {
			e.Path = path + fe.Path
		}
		out[i] = &e
	}
	return out
}

// decodeStrict decodes JSON (when the document starts with '{') or YAML
// into v, refusing unknown fields and trailing data.
func decodeStrict(data []byte, v any) error {
	t := bytes.TrimSpace(data)
	if len(t) > 0 && t[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(t))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return config.Errors{{Msg: "decoding JSON: " + err.Error()}}
		}
		if dec.More() {
			return config.Errors{{Msg: "trailing data after the JSON document"}}
		}
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return config.Errors{{Msg: "decoding YAML: " + err.Error()}}
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return config.Errors{{Msg: "a policy file holds one YAML document"}}
	}
	return nil
}
