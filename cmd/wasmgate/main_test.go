package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// wasmgateBin is the wasmgate binary, built once for the tests that run it
// as a process.
var wasmgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wasmgate-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	wasmgateBin = filepath.Join(dir, "wasmgate")
	build := exec.Command("go", "build", "-o", wasmgateBin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building wasmgate: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
