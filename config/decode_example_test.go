package config_test

import (
	"fmt"

	"github.com/wasmgate/wasmgate/config"
)

// Decode reads a partial document strictly, without validating it.
func ExampleDecode() {
	_, err := config.Decode([]byte("clusters:\n  - name: users\n    endpoint: []\n"), "bundle.yaml")
	fmt.Println(err)
	// Output: bundle.yaml:3: clusters[0].endpoint: unknown field (did you mean "endpoints"?)
}
