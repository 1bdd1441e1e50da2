package config

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestRoundTripJSON checks YAML -> Config -> JSON -> Config for every
// config in testdata, compact and indented.
func TestRoundTripJSON(t *testing.T) {
	for _, file := range testdataConfigs(t) {
		cfg, err := LoadFile(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, indent := range []bool{false, true} {
			var b []byte
			if indent {
				b, err = json.MarshalIndent(cfg, "", "  ")
			} else {
				b, err = json.Marshal(cfg)
			}
			if err != nil {
				t.Fatalf("%s: marshalling: %v", file, err)
			}
			var back Config
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("%s: unmarshalling %s: %v", file, b, err)
			}
			if !reflect.DeepEqual(cfg, &back) {
				t.Errorf("%s (indent %v): JSON round trip changed the config\nbefore: %+v\nafter:  %+v\njson: %s", file, indent, cfg, &back, b)
			}
			// The JSON is itself a config Parse accepts, to the same result.
			again, err := Parse(b, file+".json")
			if err != nil {
				t.Fatalf("%s: parsing the JSON form: %v", file, err)
			}
			if !reflect.DeepEqual(cfg, again) {
				t.Errorf("%s (indent %v): parsing the JSON form changed the config\nbefore: %+v\nafter:  %+v", file, indent, cfg, again)
			}
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		yaml, json string
		want       time.Duration
		err        string
	}{
		{yaml: "250ms", json: `"250ms"`, want: 250 * time.Millisecond},
		{yaml: "1m30s", json: `"1m30s"`, want: 90 * time.Second},
		{yaml: "0", json: `"0"`, want: 0},
		{yaml: "-2s", json: `"-2s"`, want: -2 * time.Second},
		{yaml: "5", json: `5`, err: "invalid duration"},
		{yaml: "1 h", json: `"1 h"`, err: `invalid duration "1 h"`},
		{yaml: "[1s]", json: `["1s"]`, err: `a duration must be a string such as "5s"`},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			var fromYAML struct {
				D Duration `yaml:"d"`
			}
			yerr := yaml.Unmarshal([]byte("d: "+tt.yaml), &fromYAML)
			var fromJSON Duration
			jerr := json.Unmarshal([]byte(tt.json), &fromJSON)
			if tt.err != "" {
				if yerr == nil || !strings.Contains(yerr.Error(), tt.err) {
					t.Errorf("YAML error = %v, want %q", yerr, tt.err)
				}
				if jerr == nil || (tt.json != "5" && !strings.Contains(jerr.Error(), tt.err)) {
					t.Errorf("JSON error = %v, want %q", jerr, tt.err)
				}
				return
			}
			if yerr != nil || jerr != nil {
				t.Fatalf("errors: YAML %v, JSON %v", yerr, jerr)
			}
			if fromYAML.D.D() != tt.want || fromJSON.D() != tt.want {
				t.Fatalf("got YAML %v, JSON %v, want %v", fromYAML.D, fromJSON, tt.want)
			}
			j, err := json.Marshal(fromJSON)
			if err != nil {
				t.Fatal(err)
			}
			var back Duration
			if err := json.Unmarshal(j, &back); err != nil || back != fromJSON {
				t.Errorf("JSON %s came back as %v, %v", j, back, err)
			}
			y, err := yaml.Marshal(fromYAML)
			if err != nil {
				t.Fatal(err)
			}
			var yback struct {
				D Duration `yaml:"d"`
			}
			if err := yaml.Unmarshal(y, &yback); err != nil || yback != fromYAML {
				t.Errorf("YAML %s came back as %v, %v", y, yback.D, err)
			}
		})
	}
	if got := Duration(0).Or(time.Second); got != time.Second {
		t.Errorf("Duration(0).Or(1s) = %v", got)
	}
	if got := Duration(time.Minute).Or(time.Second); got != time.Minute {
		t.Errorf("Duration(1m).Or(1s) = %v", got)
	}
}

func TestRawConfig(t *testing.T) {
	tests := []struct {
		name string
		yaml string // the value of config: in YAML
		raw  string // the bytes a plugin gets
		json string // RawConfig marshalled as JSON
		out  string // RawConfig marshalled as YAML
	}{
		{"string", `hello world`, `hello world`, `"hello world"`, "hello world\n"},
		{"mapping", `{b: [1, 2], a: x}`, `{"a":"x","b":[1,2]}`, `{"a":"x","b":[1,2]}`, "a: x\nb:\n    - 1\n    - 2\n"},
		{"nested mapping", "\n  limits:\n    rps: 10\n    burst: 2.5", `{"limits":{"burst":2.5,"rps":10}}`, `{"limits":{"burst":2.5,"rps":10}}`, "limits:\n    burst: 2.5\n    rps: 10\n"},
		{"list", `[a, 1, true]`, `["a",1,true]`, `["a",1,true]`, "- a\n- 1\n- true\n"},
		{"number", `42`, `42`, `"42"`, "\"42\"\n"},
		{"bool", `true`, `true`, `"true"`, "\"true\"\n"},
		{"JSON string kept as given", `'{"rps": 100}'`, `{"rps": 100}`, `"{\"rps\": 100}"`, "'{\"rps\": 100}'\n"},
		{"compact JSON string", `'{"b":1,"a":2}'`, `{"b":1,"a":2}`, `{"b":1,"a":2}`, "'{\"b\":1,\"a\":2}'\n"},
		{"big number", `{n: 12345678901234567890}`, `{"n":12345678901234567890}`, `{"n":12345678901234567890}`, "'{\"n\":12345678901234567890}'\n"},
		{"HTML characters", `{a: "<b>&"}`, `{"a":"\u003cb\u003e\u0026"}`, `{"a":"\u003cb\u003e\u0026"}`, "a: <b>&\n"},
		{"block string", "|\n    line 1\n    line 2", "line 1\nline 2\n", `"line 1\nline 2\n"`, "|\n    line 1\n    line 2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v struct {
				C RawConfig `yaml:"config"`
			}
			if err := yaml.Unmarshal([]byte("config: "+tt.yaml+"\n"), &v); err != nil {
				t.Fatal(err)
			}
			if string(v.C) != tt.raw {
				t.Fatalf("from YAML: %q, want %q", v.C, tt.raw)
			}
			j, err := json.Marshal(v.C)
			if err != nil {
				t.Fatal(err)
			}
			if string(j) != tt.json {
				t.Errorf("MarshalJSON: %s, want %s", j, tt.json)
			}
			var fromJSON RawConfig
			if err := json.Unmarshal(j, &fromJSON); err != nil {
				t.Fatal(err)
			}
			if string(fromJSON) != tt.raw {
				t.Errorf("JSON round trip: %q, want %q", fromJSON, tt.raw)
			}
			y, err := yaml.Marshal(v.C)
			if err != nil {
				t.Fatal(err)
			}
			if string(y) != tt.out {
				t.Errorf("MarshalYAML: %q, want %q", y, tt.out)
			}
			var back struct {
				C RawConfig `yaml:"config"`
			}
			if err := yaml.Unmarshal([]byte("config:\n  "+strings.ReplaceAll(strings.TrimSuffix(string(y), "\n"), "\n", "\n  ")+"\n"), &back); err != nil {
				t.Fatal(err)
			}
			if string(back.C) != tt.raw {
				t.Errorf("YAML round trip: %q, want %q", back.C, tt.raw)
			}
		})
	}

	// A JSON object read by encoding/json is kept compact.
	var r RawConfig
	if err := json.Unmarshal([]byte("{\n  \"a\": [1, 2]\n}"), &r); err != nil {
		t.Fatal(err)
	}
	if string(r) != `{"a":[1,2]}` {
		t.Errorf("UnmarshalJSON of an object: %q", r)
	}
}
