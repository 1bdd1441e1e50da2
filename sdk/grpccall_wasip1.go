//go:build wasip1

package sdk

import (
	"unsafe"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// The gRPC functions and callbacks of proxy-wasm v0.2.1.

//go:wasmimport env proxy_grpc_call
func proxy_grpc_call(service unsafe.Pointer, serviceN uint32, svcName unsafe.Pointer, svcNameN uint32,
	method unsafe.Pointer, methodN uint32, md unsafe.Pointer, mdN uint32,
	msg unsafe.Pointer, msgN uint32, timeout uint32, token unsafe.Pointer) uint32

//go:wasmimport env proxy_grpc_stream
func proxy_grpc_stream(service unsafe.Pointer, serviceN uint32, svcName unsafe.Pointer, svcNameN uint32,
	method unsafe.Pointer, methodN uint32, md unsafe.Pointer, mdN uint32, token unsafe.Pointer) uint32

//go:wasmimport env proxy_grpc_send
func proxy_grpc_send(token uint32, msg unsafe.Pointer, msgN uint32, endStream uint32) uint32

//go:wasmimport env proxy_grpc_cancel
func proxy_grpc_cancel(token uint32) uint32

//go:wasmimport env proxy_grpc_close
func proxy_grpc_close(token uint32) uint32

func hostGRPCCall(cluster, service, method string, md, msg []byte, timeoutMS uint32) (uint32, abi.Status) {
	st := proxy_grpc_call(sptr(cluster), uint32(len(cluster)), sptr(service), uint32(len(service)),
		sptr(method), uint32(len(method)), bptr(md), uint32(len(md)), bptr(msg), uint32(len(msg)),
		timeoutMS, outU32Ptr())
	return outU32, abi.Status(st)
}

func hostGRPCStream(cluster, service, method string, md []byte) (uint32, abi.Status) {
	st := proxy_grpc_stream(sptr(cluster), uint32(len(cluster)), sptr(service), uint32(len(service)),
		sptr(method), uint32(len(method)), bptr(md), uint32(len(md)), outU32Ptr())
	return outU32, abi.Status(st)
}

func hostGRPCSend(token uint32, msg []byte, endStream bool) abi.Status {
	return abi.Status(proxy_grpc_send(token, bptr(msg), uint32(len(msg)), b2u(endStream)))
}

func hostGRPCCancel(token uint32) abi.Status { return abi.Status(proxy_grpc_cancel(token)) }

func hostGRPCClose(token uint32) abi.Status { return abi.Status(proxy_grpc_close(token)) }

//go:wasmexport proxy_on_grpc_receive_initial_metadata
func proxyOnGRPCReceiveInitialMetadata(root, token, n uint32) {
	onGRPCReceiveInitialMetadata(root, token, n)
}

//go:wasmexport proxy_on_grpc_receive
func proxyOnGRPCReceive(root, token, size uint32) { onGRPCReceive(root, token, size) }

//go:wasmexport proxy_on_grpc_receive_trailing_metadata
func proxyOnGRPCReceiveTrailingMetadata(root, token, n uint32) {
	onGRPCReceiveTrailingMetadata(root, token, n)
}

//go:wasmexport proxy_on_grpc_close
func proxyOnGRPCClose(root, token, code uint32) { onGRPCClose(root, token, code) }
