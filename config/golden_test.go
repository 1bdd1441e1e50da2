package config

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the .golden files in testdata")

// testdataConfigs lists the valid configs in testdata.
func testdataConfigs(t testing.TB) []string {
	var files []string
	for _, pattern := range []string{"testdata/*.yaml", "testdata/*.json"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("no configs in testdata")
	}
	return files
}

func marshalYAML(t *testing.T, cfg *Config) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		t.Fatalf("marshalling: %v", err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestGolden checks the normalized form of every config in testdata
// against its .golden file. Regenerate with go test ./config -update.
func TestGolden(t *testing.T) {
	for _, file := range testdataConfigs(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			cfg, err := LoadFile(file)
			if err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
			got := marshalYAML(t, cfg)
			golden := file + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./config -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("normalized %s differs from %s (run go test ./config -update and review the diff):\n%s", file, golden, got)
			}

			// The normalized form is itself a valid config that normalizes
			// to itself.
			again, err := Parse(got, golden)
			if err != nil {
				t.Fatalf("parsing the normalized form: %v", err)
			}
			if b := marshalYAML(t, again); !bytes.Equal(b, got) {
				t.Errorf("normalizing twice changed the config:\n%s", b)
			}
		})
	}
}
