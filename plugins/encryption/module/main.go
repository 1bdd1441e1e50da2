// Command module is the main package of encryption.wasm: the encryption filter
// alone. Rebuild ../encryption.wasm with:
//
//go:generate sh -c "GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -buildmode=c-shared -trimpath -buildvcs=false -o ../encryption.wasm ."
package main

import (
	"github.com/wasmgate/wasmgate/plugins/encryption"
	"github.com/wasmgate/wasmgate/sdk"
)

func main() {}

func init() { sdk.Register(encryption.New) }
