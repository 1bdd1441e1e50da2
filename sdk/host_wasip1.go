//go:build wasip1

package sdk

import (
	"unsafe"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// received is the block the host asked for through
// proxy_on_memory_allocate during the current host call. The host
// allocates at most once per call; take hands the block to the caller,
// which then owns it.
var received []byte

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) unsafe.Pointer {
	if size == 0 {
		size = 1
	}
	received = make([]byte, size)
	return unsafe.Pointer(unsafe.SliceData(received))
}

// take returns the n bytes the host wrote at ptr: the block it allocated
// during the call that just returned.
func take(ptr unsafe.Pointer, n uint32) []byte {
	b := received
	received = nil
	if n == 0 || ptr == nil {
		return nil
	}
	if len(b) >= int(n) && unsafe.Pointer(unsafe.SliceData(b)) == ptr {
		return b[:n:n]
	}
	// Not ours (a host using malloc semantics): copy it out.
	return append([]byte(nil), unsafe.Slice((*byte)(ptr), n)...)
}

func sptr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }
func bptr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

func hostLog(level abi.LogLevel, msg string) abi.Status {
	return abi.Status(proxy_log(uint32(level), sptr(msg), uint32(len(msg))))
}

func hostLogLevel() (abi.LogLevel, abi.Status) {
	var l uint32
	st := proxy_get_log_level(unsafe.Pointer(&l))
	return abi.LogLevel(l), abi.Status(st)
}

func hostNow() int64 {
	var t int64
	proxy_get_current_time_nanoseconds(unsafe.Pointer(&t))
	return t
}

func hostSetTickPeriod(ms uint32) abi.Status {
	return abi.Status(proxy_set_tick_period_milliseconds(ms))
}

func hostSetEffectiveContext(id uint32) abi.Status {
	return abi.Status(proxy_set_effective_context(id))
}

func hostGetBuffer(t abi.BufferType, start, size uint32) ([]byte, abi.Status) {
	var p unsafe.Pointer
	var n uint32
	st := abi.Status(proxy_get_buffer_bytes(uint32(t), start, size, unsafe.Pointer(&p), unsafe.Pointer(&n)))
	b := take(p, n)
	return b, st
}

func hostBufferSize(t abi.BufferType) (uint32, abi.Status) {
	var n, flags uint32
	st := proxy_get_buffer_status(uint32(t), unsafe.Pointer(&n), unsafe.Pointer(&flags))
	return n, abi.Status(st)
}

func hostSetBuffer(t abi.BufferType, start, size uint32, data []byte) abi.Status {
	return abi.Status(proxy_set_buffer_bytes(uint32(t), start, size, bptr(data), uint32(len(data))))
}

func hostGetMapPairs(t abi.MapType) ([]byte, abi.Status) {
	var p unsafe.Pointer
	var n uint32
	st := abi.Status(proxy_get_header_map_pairs(uint32(t), unsafe.Pointer(&p), unsafe.Pointer(&n)))
	return take(p, n), st
}

func hostSetMapPairs(t abi.MapType, data []byte) abi.Status {
	return abi.Status(proxy_set_header_map_pairs(uint32(t), bptr(data), uint32(len(data))))
}

func hostGetMapValue(t abi.MapType, key string) (string, abi.Status) {
	var p unsafe.Pointer
	var n uint32
	st := abi.Status(proxy_get_header_map_value(uint32(t), sptr(key), uint32(len(key)), unsafe.Pointer(&p), unsafe.Pointer(&n)))
	b := take(p, n)
	if len(b) == 0 {
		return "", st
	}
	// b is owned by nobody else: share it with the string.
	return unsafe.String(unsafe.SliceData(b), len(b)), st
}

func hostAddMapValue(t abi.MapType, key, value string) abi.Status {
	return abi.Status(proxy_add_header_map_value(uint32(t), sptr(key), uint32(len(key)), sptr(value), uint32(len(value))))
}

func hostReplaceMapValue(t abi.MapType, key, value string) abi.Status {
	return abi.Status(proxy_replace_header_map_value(uint32(t), sptr(key), uint32(len(key)), sptr(value), uint32(len(value))))
}

func hostRemoveMapValue(t abi.MapType, key string) abi.Status {
	return abi.Status(proxy_remove_header_map_value(uint32(t), sptr(key), uint32(len(key))))
}

func hostContinueStream(t abi.StreamType) abi.Status {
	return abi.Status(proxy_continue_stream(uint32(t)))
}

func hostCloseStream(t abi.StreamType) abi.Status {
	return abi.Status(proxy_close_stream(uint32(t)))
}

func hostGetStatus() (uint32, string, abi.Status) {
	var code uint32
	var p unsafe.Pointer
	var n uint32
	st := abi.Status(proxy_get_status(unsafe.Pointer(&code), unsafe.Pointer(&p), unsafe.Pointer(&n)))
	return code, string(take(p, n)), st
}

func hostSendLocalResponse(status uint32, details string, body, headers []byte, grpc uint32) abi.Status {
	return abi.Status(proxy_send_local_response(status, sptr(details), uint32(len(details)),
		bptr(body), uint32(len(body)), bptr(headers), uint32(len(headers)), grpc))
}

func hostHTTPCall(cluster string, headers, body, trailers []byte, timeoutMS uint32) (uint32, abi.Status) {
	var id uint32
	st := proxy_http_call(sptr(cluster), uint32(len(cluster)), bptr(headers), uint32(len(headers)),
		bptr(body), uint32(len(body)), bptr(trailers), uint32(len(trailers)), timeoutMS, unsafe.Pointer(&id))
	return id, abi.Status(st)
}

func hostGetSharedData(key string) ([]byte, uint32, abi.Status) {
	var p unsafe.Pointer
	var n, cas uint32
	st := abi.Status(proxy_get_shared_data(sptr(key), uint32(len(key)), unsafe.Pointer(&p), unsafe.Pointer(&n), unsafe.Pointer(&cas)))
	return take(p, n), cas, st
}

func hostSetSharedData(key string, value []byte, cas uint32) abi.Status {
	return abi.Status(proxy_set_shared_data(sptr(key), uint32(len(key)), bptr(value), uint32(len(value)), cas))
}

func hostRegisterQueue(name string) (uint32, abi.Status) {
	var id uint32
	st := proxy_register_shared_queue(sptr(name), uint32(len(name)), unsafe.Pointer(&id))
	return id, abi.Status(st)
}

func hostResolveQueue(vm, name string) (uint32, abi.Status) {
	var id uint32
	st := proxy_resolve_shared_queue(sptr(vm), uint32(len(vm)), sptr(name), uint32(len(name)), unsafe.Pointer(&id))
	return id, abi.Status(st)
}

func hostEnqueue(id uint32, value []byte) abi.Status {
	return abi.Status(proxy_enqueue_shared_queue(id, bptr(value), uint32(len(value))))
}

func hostDequeue(id uint32) ([]byte, abi.Status) {
	var p unsafe.Pointer
	var n uint32
	st := abi.Status(proxy_dequeue_shared_queue(id, unsafe.Pointer(&p), unsafe.Pointer(&n)))
	return take(p, n), st
}

func hostDefineMetric(kind abi.MetricType, name string) (uint32, abi.Status) {
	var id uint32
	st := proxy_define_metric(uint32(kind), sptr(name), uint32(len(name)), unsafe.Pointer(&id))
	return id, abi.Status(st)
}

func hostIncrementMetric(id uint32, delta int64) abi.Status {
	return abi.Status(proxy_increment_metric(id, delta))
}

func hostRecordMetric(id uint32, value uint64) abi.Status {
	return abi.Status(proxy_record_metric(id, value))
}

func hostGetMetric(id uint32) (uint64, abi.Status) {
	var v uint64
	st := proxy_get_metric(id, unsafe.Pointer(&v))
	return v, abi.Status(st)
}

func hostGetProperty(path []byte) ([]byte, abi.Status) {
	var p unsafe.Pointer
	var n uint32
	st := abi.Status(proxy_get_property(bptr(path), uint32(len(path)), unsafe.Pointer(&p), unsafe.Pointer(&n)))
	return take(p, n), st
}

func hostSetProperty(path, value []byte) abi.Status {
	return abi.Status(proxy_set_property(bptr(path), uint32(len(path)), bptr(value), uint32(len(value))))
}
