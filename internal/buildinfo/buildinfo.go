// Package buildinfo reports the version the binary was built from.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// version is set with -ldflags "-X github.com/wasmgate/wasmgate/internal/buildinfo.version=v1.2.3".
var version = ""

// Version returns the release version, the module version, or "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// GoVersion returns the Go toolchain the binary was built with.
func GoVersion() string { return runtime.Version() }
