// Package sdk writes wasmgate plugins in plain Go: HTTP filters that
// run in wasmgate, Envoy, or any host of the proxy-wasm ABI v0.2.1, built
// with the standard Go toolchain (Go 1.24 or later):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm .
//
// (or `wasmgate plugin build DIR`, which adds -trimpath and -buildvcs=false
// for reproducible modules).
//
// # A filter
//
// A plugin is a main package whose init function calls Register with a
// function that turns the plugin's configuration into a Filter. The
// Filter sees each request through a *Request and its *Response; it
// embeds BaseFilter for the callbacks it does not need:
//
//	type apiKey struct {
//		sdk.BaseFilter
//		key string
//	}
//
//	func init() {
//		sdk.Register(func(cfg []byte) (sdk.Filter, error) {
//			return &apiKey{key: string(cfg)}, nil
//		})
//	}
//
//	func (f *apiKey) OnRequestHeaders(r *sdk.Request) sdk.Action {
//		if r.Header().Get("x-api-key") != f.key {
//			return r.Respond(401, []byte("bad key\n"), nil)
//		}
//		r.Header().Del("x-api-key")
//		return sdk.Continue
//	}
//
//	func main() {}
//
// The host calls a filter on one goroutine at a time: no locks are
// needed. Each instance of the module (the host runs a pool of them) has
// its own memory; state shared by every instance goes through SharedData,
// a Queue or metrics.
//
// # Contexts
//
// Register's function runs in a root context: one per configuration of
// the plugin (its own, and each route's override) in each instance. Tick,
// RegisterQueue and HTTPCall set up there belong to that configuration.
// Request callbacks run in the request's context; an HTTPCall made from
// one calls back in that request's context, so the callback can Resume
// the request or Respond to it.
//
// # Several filters in one module
//
// A module may hold several filters, each registered with RegisterRoot
// under a root_id; each configuration gets the filter its root_id (the
// plugin_root_id property) names. A host that runs several plugins in
// one VM (wasmgate's and Envoy's vm_id) then runs them all on one Go
// runtime, which is most of a Go module's memory.
//
// # Errors
//
// Functions that call the host return errors that wrap ErrNotFound,
// ErrBadArgument, ErrEmpty, ErrCASMismatch, ErrUnimplemented... as a
// *HostError naming the host function. Header.Get returns "" for a
// missing field; Header.Lookup tells absence apart.
//
// # Memory
//
// The module exports proxy_on_memory_allocate. A host function that
// returns data allocates once in the module's memory; the SDK takes that
// block over without copying it again (a header value becomes a string
// that shares it).
//
// # Testing
//
// Built for any other platform than wasip1, the package runs against an
// in-memory host, so plugin logic compiles and its pure parts test
// natively with `go test`. To run a built module in the real host, use
// the harness of the wasmgate module, package proxy/wasm/wasmtest, or
// `wasmgate plugin test`.
package sdk
