// Command module is the main package of telemetry.wasm: the telemetry filter
// alone. Rebuild ../telemetry.wasm with:
//
//go:generate sh -c "GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -buildmode=c-shared -trimpath -buildvcs=false -o ../telemetry.wasm ."
package main

import (
	"github.com/wasmgate/wasmgate/plugins/telemetry"
	"github.com/wasmgate/wasmgate/sdk"
)

func main() {}

func init() { sdk.Register(telemetry.New) }
