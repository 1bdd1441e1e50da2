package config

import (
	"encoding/json"
	"errors"
	"os"
	"testing"
)

// FuzzParse feeds Parse arbitrary bytes. It must never panic; it must
// return either a valid config or an Errors of FieldErrors; and a config
// it accepts must survive a JSON round trip and parse again.
func FuzzParse(f *testing.F) {
	for _, file := range testdataConfigs(f) {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"", "---\n", "[]", "null", "listeners: [", web,
		web + "    match: {path_regex: \"(\"}\n",
		"a: &a [*a]\n",
		"listeners:\n- <<: [{name: a}, 5]\n",
		aliasBomb(20),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if cfg != nil {
				t.Fatalf("Parse returned a config and an error: %v", err)
			}
			var list Errors
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error is %T %v, want a non-empty Errors", err, err)
			}
			for _, fe := range list {
				if fe == nil || fe.Msg == "" {
					t.Fatalf("empty FieldError in %v", err)
				}
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshalling an accepted config: %v", err)
		}
		if _, err := Parse(b, "fuzz.json"); err != nil {
			t.Fatalf("the JSON form of an accepted config does not parse: %v\n%s", err, b)
		}
	})
}

// FuzzDecodeValue feeds DecodeValue, which the control plane's API runs on
// request bodies, arbitrary bytes. It must never panic, and an error must
// be a non-empty Errors of FieldErrors with a message.
func FuzzDecodeValue(f *testing.F) {
	for _, s := range []string{
		"", "name: a\n", "name: a\nendpoint: []\n", `{"name": "a", "endpoints": [{"address": "b:1", "weight": "x"}]}`,
		"endpoints: {a: b}\n", "connect_timeout: [1]\n", "<<: [{name: a}, 5]\n", "a: &a [*a]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var cl Cluster
		err := DecodeValue(data, "fuzz.yaml", &cl)
		if err == nil {
			return
		}
		var list Errors
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error is %T %v, want a non-empty Errors", err, err)
		}
		for _, fe := range list {
			if fe == nil || fe.Msg == "" {
				t.Fatalf("empty FieldError in %v", err)
			}
		}
	})
}
