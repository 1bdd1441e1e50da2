package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as a Go duration string ("250ms", "5s").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Or returns d, or def when d is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a string such as \"5s\"", n.Line)
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string such as \"5s\"")
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func parseDuration(s string) (Duration, error) {
	if s == "0" {
		return 0, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want a number with a unit: ms, s, m, h)", s)
	}
	return Duration(v), nil
}

// RawConfig is opaque configuration handed to a plugin. In YAML or JSON it
// is a string (taken as raw bytes) or any other value (encoded as JSON).
type RawConfig []byte

// UnmarshalYAML implements yaml.Unmarshaler.
func (r *RawConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && (n.Tag == "!!str" || n.Tag == "!!binary") {
		*r = RawConfig(n.Value)
		return nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("line %d: plugin configuration cannot be encoded as JSON: %w", n.Line, err)
	}
	*r = b
	return nil
}

// MarshalYAML implements yaml.Marshaler: a JSON object or array as
// UnmarshalYAML encodes one comes out as a YAML value, anything else as a
// string, so that the bytes survive a round trip.
func (r RawConfig) MarshalYAML() (any, error) {
	if v, ok := r.jsonValue(); ok {
		if b, err := json.Marshal(v); err == nil && bytes.Equal(b, r) {
			return v, nil
		}
	}
	return string(r), nil
}

// UnmarshalJSON implements json.Unmarshaler. A value other than a string
// is kept as compact JSON.
func (r *RawConfig) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*r = RawConfig(s)
		return nil
	}
	var c bytes.Buffer
	if err := json.Compact(&c, b); err != nil {
		return err
	}
	*r = RawConfig(c.Bytes())
	return nil
}

// MarshalJSON implements json.Marshaler: a compact JSON object or array
// comes out as itself, anything else as a string, so that the bytes
// survive a round trip.
func (r RawConfig) MarshalJSON() ([]byte, error) {
	if _, ok := r.jsonValue(); ok {
		var c bytes.Buffer
		if json.Compact(&c, r) == nil && bytes.Equal(c.Bytes(), r) {
			return []byte(r), nil
		}
	}
	return json.Marshal(string(r))
}

func (r RawConfig) jsonValue() (any, bool) {
	t := bytes.TrimSpace(r)
	if len(t) == 0 || (t[0] != '{' && t[0] != '[') {
		return nil, false
	}
	var v any
	if json.Unmarshal(t, &v) != nil {
		return nil, false
	}
	return v, true
}
