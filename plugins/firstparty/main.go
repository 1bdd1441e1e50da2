// Command firstparty is one module holding the three first-party
// filters, each selected by its root_id ("authz", "encryption",
// "telemetry"). Configured as plugins that share a vm_id, the three run
// in one VM: one Go runtime and one copy of the compiled code instead of
// three. Rebuild firstparty.wasm beside this file with:
//
//go:generate sh -c "GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -buildmode=c-shared -trimpath -buildvcs=false -o firstparty.wasm ."
package main

import (
	"github.com/wasmgate/wasmgate/plugins/authz"
	"github.com/wasmgate/wasmgate/plugins/encryption"
	"github.com/wasmgate/wasmgate/plugins/telemetry"
	"github.com/wasmgate/wasmgate/sdk"
)

func main() {}

func init() {
	sdk.RegisterRoot(authz.RootID, authz.New)
	sdk.RegisterRoot(encryption.RootID, encryption.New)
	sdk.RegisterRoot(telemetry.RootID, telemetry.New)
}
