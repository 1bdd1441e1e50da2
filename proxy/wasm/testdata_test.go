package wasm

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestModulesMatchManifest checks the committed modules against the
// manifest that build.sh wrote with them.
func TestModulesMatchManifest(t *testing.T) {
	manifest, err := os.ReadFile("testdata/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(manifest)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("bad manifest line %q", line)
		}
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256(b)
		if got := hex.EncodeToString(d[:]); got != sum {
			t.Errorf("%s: sha256 %s, manifest says %s: run testdata/build.sh", name, got, sum)
		}
	}
}

// TestModulesAreCurrent rebuilds every test module from source into a
// temporary directory and compares digests with the committed manifest:
// the committed .wasm files are what their sources build to.
func TestModulesAreCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("rebuilds the test modules")
	}
	for _, tool := range []string{"go", "wat2wasm", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	out := t.TempDir()
	cmd := exec.Command("sh", "testdata/build.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	want, err := os.ReadFile("testdata/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("committed modules are stale; run testdata/build.sh\nfresh build:\n%s\ncommitted:\n%s", got, want)
	}
}
