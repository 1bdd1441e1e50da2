// Package plugins holds wasmgate's first-party Wasm filters, authz,
// encryption and telemetry, each a package built with the Go SDK, from its
// module/ main package, to a .wasm module committed beside its source;
// and firstparty, one module holding the three, selected by root_id,
// which several plugins sharing a vm_id run in one VM. The modules are
// embedded here so that the wasmgate binary ships them.
package plugins

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

//go:embed */*.wasm
var modules embed.FS

// Names returns the names of the embedded plugins, sorted.
func Names() []string {
	files, _ := fs.Glob(modules, "*/*.wasm")
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, path.Dir(f))
	}
	sort.Strings(names)
	return names
}

// Module returns the module of the named plugin ("authz", "encryption",
// "telemetry", "firstparty"). The bytes are shared: callers must not change them.
func Module(name string) ([]byte, error) {
	if strings.ContainsAny(name, "/.") {
		return nil, fmt.Errorf("no embedded plugin %q", name)
	}
	b, err := modules.ReadFile(name + "/" + name + ".wasm")
	if err != nil {
		return nil, fmt.Errorf("no embedded plugin %q (have %s)", name, strings.Join(Names(), ", "))
	}
	return b, nil
}
