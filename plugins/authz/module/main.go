// Command module is the main package of authz.wasm: the authz filter
// alone. Rebuild ../authz.wasm with:
//
//go:generate sh -c "GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -buildmode=c-shared -trimpath -buildvcs=false -o ../authz.wasm ."
package main

import (
	"github.com/wasmgate/wasmgate/plugins/authz"
	"github.com/wasmgate/wasmgate/sdk"
)

func main() {}

func init() { sdk.Register(authz.New) }
