package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

func TestNames(t *testing.T) {
	if got, want := Names(), []string{"authz", "encryption", "firstparty", "telemetry"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	if _, err := Module("../x"); err == nil {
		t.Error("Module accepted a path")
	}
}

// TestShippedModulesAreFresh rebuilds every module the way its generate
// directive does (from <name>/module for a single filter, from
// firstparty itself for the module holding all three) and checks that
// the embedded module is byte for byte the fresh build: a change to a
// plugin or the SDK must come with its rebuilt modules
// (go generate ./plugins/...).
func TestShippedModulesAreFresh(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every plugin")
	}
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain")
	}
	dir := t.TempDir()
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(dir, name+".wasm")
			cmd := exec.Command(gotool, "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false", "-o", out, ".")
			cmd.Dir = name
			if _, err := os.Stat(filepath.Join(name, "module")); err == nil {
				cmd.Dir = filepath.Join(name, "module")
			}
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("build: %v\n%s", err, b)
			}
			fresh, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			shipped, err := Module(name)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := sum(shipped), sum(fresh); a != b {
				t.Fatalf("%s/%s.wasm is stale: shipped sha256 %s, fresh build %s; run go generate ./plugins/%s",
					name, name, a, b, cmd.Dir)
			}
		})
	}
}

func sum(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}
