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
	names := map[string]int{}
	for i := range doc.AuthorizationPolicies {
		p := &doc.AuthorizationPolicies[i]
		p.Normalize()
		path := fmt.Sprintf("authorization_policies[%d]", i)
		all = append(all, prefixed(path, p.Validate())...)
		all = append(all, duplicate(names, path, p.Name, i)...)
	}
	names = map[string]int{}
	for i := range doc.PeerAuthentications {
		p := &doc.PeerAuthentications[i]
		p.Normalize()
		path := fmt.Sprintf("peer_authentications[%d]", i)
		all = append(all, prefixed(path, p.Validate())...)
		all = append(all, duplicate(names, path, p.Name, i)...)
	}
	names = map[string]int{}
	for i := range doc.OutboundTrafficPolicies {
		p := &doc.OutboundTrafficPolicies[i]
		p.Normalize()
		path := fmt.Sprintf("outbound_traffic_policies[%d]", i)
		all = append(all, prefixed(path, p.Validate())...)
		all = append(all, duplicate(names, path, p.Name, i)...)
	}
	if len(all) > 0 {
		return nil, all
	}
	return doc, nil
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
