package wasm

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"sort"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// metaTables hold the metadata of a configuration's routes and clusters,
// by name, for the route_metadata and cluster_metadata properties.
type metaTables struct {
	routes   map[string]*config.Metadata
	clusters map[string]*config.Metadata
	// directions are the listeners' traffic directions, as Envoy's
	// TrafficDirection enum: 1 inbound, 2 outbound (0 unset is left out).
	directions map[string]uint64
}

// UseConfig gives the set the configuration it serves, whose route and
// cluster metadata the plugins read as properties. The proxy calls it
// after Prepare and before it asks for factories; factories made before
// see no metadata.
func (s *Set) UseConfig(cfg *config.Config) {
	t := &metaTables{routes: map[string]*config.Metadata{}, clusters: map[string]*config.Metadata{}, directions: map[string]uint64{}}
	for _, l := range cfg.Listeners {
		switch l.TrafficDirection {
		case config.DirectionInbound:
			t.directions[l.Name] = 1
		case config.DirectionOutbound:
			t.directions[l.Name] = 2
		}
	}
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if r.Metadata != nil {
				t.routes[r.Name] = r.Metadata
			}
		}
	}
	for _, c := range cfg.Clusters {
		if c.Metadata != nil {
			t.clusters[c.Name] = c.Metadata
		}
	}
	s.meta.Store(t)
}

// metadataProperty serves the rest of a route_metadata or
// cluster_metadata path: filter_metadata, then a namespace (a map of its
// keys, values as below), then a key. Values are encoded as Envoy encodes
// a google.protobuf.Value: strings raw, numbers as 8-byte little-endian
// doubles, booleans one byte; lists and maps as JSON.
func metadataProperty(c *propCtx, md *config.Metadata) ([]byte, abi.Status) {
	if md == nil {
		return nil, abi.StatusNotFound
	}
	field, rest, _ := bytes.Cut(c.rest, []byte{0})
	if string(field) != "filter_metadata" {
		return nil, abi.StatusNotFound
	}
	ns, key, hasKey := bytes.Cut(rest, []byte{0})
	vals, ok := md.FilterMetadata[string(ns)]
	if !ok {
		return nil, abi.StatusNotFound
	}
	if !hasKey {
		keys := make([]string, 0, len(vals))
		for k := range vals {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		c.in.kv = c.in.kv[:0]
		for _, k := range keys {
			b, err := metadataValue(nil, vals[k])
			if err != nil {
				return nil, abi.StatusSerializationFailure
			}
			c.in.kv = append(c.in.kv, kv{[]byte(k), b})
		}
		return serialize(c.out, c.in.kv), abi.StatusOK
	}
	v, ok := vals[string(key)]
	if !ok {
		return nil, abi.StatusNotFound
	}
	out, err := metadataValue(c.out, v)
	if err != nil {
		return nil, abi.StatusSerializationFailure
	}
	return out, abi.StatusOK
}

func metadataValue(out []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case string:
		return append(out, v...), nil
	case bool:
		if v {
			return append(out, 1), nil
		}
		return append(out, 0), nil
	case int:
		return binary.LittleEndian.AppendUint64(out, math.Float64bits(float64(v))), nil
	case int64:
		return binary.LittleEndian.AppendUint64(out, math.Float64bits(float64(v))), nil
	case uint64:
		return binary.LittleEndian.AppendUint64(out, math.Float64bits(float64(v))), nil
	case float64:
		return binary.LittleEndian.AppendUint64(out, math.Float64bits(v)), nil
	case nil:
		return out, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("metadata value: %w", err)
	}
	return append(out, b...), nil
}
