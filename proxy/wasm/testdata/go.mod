module github.com/wasmgate/wasmgate/proxy/wasm/testdata

go 1.24

require (
	github.com/proxy-wasm/proxy-wasm-go-sdk v0.0.0-20260105142703-44c7d5847745
	github.com/wasmgate/wasmgate/sdk v0.0.0
)

replace github.com/wasmgate/wasmgate/sdk => ../../../sdk
