//go:build wasip1

package sdk

// The callbacks of proxy-wasm v0.2.1 that the host calls. Each hands over
// to the platform-independent dispatcher in dispatch.go.

//go:wasmexport proxy_abi_version_0_2_1
func proxyABIVersion021() {}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(id, parent uint32) { onContextCreate(id, parent) }

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(id, size uint32) uint32 { return b2u(onVMStart(id, size)) }

//go:wasmexport proxy_on_configure
func proxyOnConfigure(id, size uint32) uint32 { return b2u(onConfigure(id, size)) }

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(id, n, eos uint32) uint32 {
	return uint32(onRequestHeaders(id, n, eos != 0))
}

// wasmgate_on_request_headers is wasmgate's: proxy_on_context_create
// and proxy_on_request_headers in one call, whose result may also say
// that the context is over (onFirstRequestHeaders). Other hosts never
// call it.
//
//go:wasmexport wasmgate_on_request_headers
func wasmgateOnRequestHeaders(id, parent, n, eos uint32) uint32 {
	return onFirstRequestHeaders(id, parent, n, eos != 0)
}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(id, size, eos uint32) uint32 {
	return uint32(onRequestBody(id, size, eos != 0))
}

//go:wasmexport proxy_on_request_trailers
func proxyOnRequestTrailers(id, n uint32) uint32 { return uint32(onRequestTrailers(id, n)) }

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(id, n, eos uint32) uint32 {
	return uint32(onResponseHeaders(id, n, eos != 0))
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(id, size, eos uint32) uint32 {
	return uint32(onResponseBody(id, size, eos != 0))
}

//go:wasmexport proxy_on_response_trailers
func proxyOnResponseTrailers(id, n uint32) uint32 { return uint32(onResponseTrailers(id, n)) }

// proxy_on_done is not exported: a filter has nothing to finish after
// its stream ends, and a host treats a module without it as done at once
// (proxy-wasm-cpp-host, and so Envoy, does), saving a call per request.

//go:wasmexport proxy_on_log
func proxyOnLog(id uint32) { onLog(id) }

//go:wasmexport proxy_on_delete
func proxyOnDelete(id uint32) { onDelete(id) }

//go:wasmexport proxy_on_new_connection
func proxyOnNewConnection(id uint32) uint32 { return uint32(onNewConnection(id)) }

//go:wasmexport proxy_on_downstream_data
func proxyOnDownstreamData(id, size, eos uint32) uint32 {
	return uint32(onConnData(id, size, eos != 0, false))
}

//go:wasmexport proxy_on_upstream_data
func proxyOnUpstreamData(id, size, eos uint32) uint32 {
	return uint32(onConnData(id, size, eos != 0, true))
}

//go:wasmexport proxy_on_downstream_connection_close
func proxyOnDownstreamConnectionClose(id, peer uint32) { onDownstreamClose(id, peer) }

//go:wasmexport proxy_on_http_call_response
func proxyOnHTTPCallResponse(root, token, headers, bodySize, trailers uint32) {
	onHTTPCallResponse(root, token, headers, bodySize, trailers)
}

//go:wasmexport proxy_on_tick
func proxyOnTick(root uint32) { onTick(root) }

//go:wasmexport proxy_on_queue_ready
func proxyOnQueueReady(root, queue uint32) { onQueueReady(root, queue) }

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
