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

// Small blocks (a header's value, a property, a foreign function's
// result: several per request) are carved from a chunk, one runtime
// allocation per chunk rather than per block, since an allocation is
// dear in a guest (a third of the time a chained filter spent in
// proxy_on_memory_allocate). Each block is handed out once and capped at
// its size, so a caller that appends to it reallocates rather than
// writing over the next. A block its caller keeps keeps its chunk alive:
// at most chunkSize per kept value, the price of the speed.
const (
	chunkSize  = 2048
	smallBlock = 256
)

var chunk []byte // what is left of the current chunk

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) unsafe.Pointer {
	if size == 0 {
		size = 1
	}
	if size <= smallBlock {
		if len(chunk) < int(size) {
			chunk = make([]byte, chunkSize)
		}
		received, chunk = chunk[:size:size], chunk[size:]
	} else {
		received = make([]byte, size)
	}
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

// Out-parameters of host calls. The host writes them during a call and
// the caller reads them as soon as it returns; one set serves every call,
// since the guest runs one call at a time. Locals would do, but their
// addresses cross into the host, which moves them to the heap: an
// allocation per call. Callers clear them first, as the host leaves them
// untouched when it fails.
var (
	outPtr unsafe.Pointer
	outLen uint32
	outU32 uint32 // ids, codes, flags, log levels, CAS values
	outU64 uint64 // times, metric values
)

func outPtrs() (unsafe.Pointer, unsafe.Pointer) {
	outPtr, outLen = nil, 0
	return unsafe.Pointer(&outPtr), unsafe.Pointer(&outLen)
}

func outU32Ptr() unsafe.Pointer {
	outU32 = 0
	return unsafe.Pointer(&outU32)
}

func outU64Ptr() unsafe.Pointer {
	outU64 = 0
	return unsafe.Pointer(&outU64)
}

func sptr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }
func bptr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

func hostLog(level abi.LogLevel, msg string) abi.Status {
	return abi.Status(proxy_log(uint32(level), sptr(msg), uint32(len(msg))))
}

func hostLogLevel() (abi.LogLevel, abi.Status) {
	st := proxy_get_log_level(outU32Ptr())
	return abi.LogLevel(outU32), abi.Status(st)
}

func hostNow() int64 {
	proxy_get_current_time_nanoseconds(outU64Ptr())
	return int64(outU64)
}

func hostSetTickPeriod(ms uint32) abi.Status {
	return abi.Status(proxy_set_tick_period_milliseconds(ms))
}

func hostSetEffectiveContext(id uint32) abi.Status {
	return abi.Status(proxy_set_effective_context(id))
}

func hostGetBuffer(t abi.BufferType, start, size uint32) ([]byte, abi.Status) {
	p, n := outPtrs()
	st := abi.Status(proxy_get_buffer_bytes(uint32(t), start, size, p, n))
	return take(outPtr, outLen), st
}

func hostBufferSize(t abi.BufferType) (uint32, abi.Status) {
	_, n := outPtrs()
	st := proxy_get_buffer_status(uint32(t), n, outU32Ptr())
	return outLen, abi.Status(st)
}

func hostSetBuffer(t abi.BufferType, start, size uint32, data []byte) abi.Status {
	return abi.Status(proxy_set_buffer_bytes(uint32(t), start, size, bptr(data), uint32(len(data))))
}

func hostGetMapPairs(t abi.MapType) ([]byte, abi.Status) {
	p, n := outPtrs()
	st := abi.Status(proxy_get_header_map_pairs(uint32(t), p, n))
	return take(outPtr, outLen), st
}

func hostSetMapPairs(t abi.MapType, data []byte) abi.Status {
	return abi.Status(proxy_set_header_map_pairs(uint32(t), bptr(data), uint32(len(data))))
}

func hostGetMapValue(t abi.MapType, key string) (string, abi.Status) {
	p, n := outPtrs()
	st := abi.Status(proxy_get_header_map_value(uint32(t), sptr(key), uint32(len(key)), p, n))
	b := take(outPtr, outLen)
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
	p, n := outPtrs()
	st := abi.Status(proxy_get_status(outU32Ptr(), p, n))
	return outU32, string(take(outPtr, outLen)), st
}

func hostSendLocalResponse(status uint32, details string, body, headers []byte, grpc uint32) abi.Status {
	return abi.Status(proxy_send_local_response(status, sptr(details), uint32(len(details)),
		bptr(body), uint32(len(body)), bptr(headers), uint32(len(headers)), grpc))
}

func hostHTTPCall(cluster string, headers, body, trailers []byte, timeoutMS uint32) (uint32, abi.Status) {
	st := proxy_http_call(sptr(cluster), uint32(len(cluster)), bptr(headers), uint32(len(headers)),
		bptr(body), uint32(len(body)), bptr(trailers), uint32(len(trailers)), timeoutMS, outU32Ptr())
	return outU32, abi.Status(st)
}

func hostGetSharedData(key string) ([]byte, uint32, abi.Status) {
	p, n := outPtrs()
	st := abi.Status(proxy_get_shared_data(sptr(key), uint32(len(key)), p, n, outU32Ptr()))
	return take(outPtr, outLen), outU32, st
}

func hostSetSharedData(key string, value []byte, cas uint32) abi.Status {
	return abi.Status(proxy_set_shared_data(sptr(key), uint32(len(key)), bptr(value), uint32(len(value)), cas))
}

func hostRegisterQueue(name string) (uint32, abi.Status) {
	st := proxy_register_shared_queue(sptr(name), uint32(len(name)), outU32Ptr())
	return outU32, abi.Status(st)
}

func hostResolveQueue(vm, name string) (uint32, abi.Status) {
	st := proxy_resolve_shared_queue(sptr(vm), uint32(len(vm)), sptr(name), uint32(len(name)), outU32Ptr())
	return outU32, abi.Status(st)
}

func hostEnqueue(id uint32, value []byte) abi.Status {
	return abi.Status(proxy_enqueue_shared_queue(id, bptr(value), uint32(len(value))))
}

func hostDequeue(id uint32) ([]byte, abi.Status) {
	p, n := outPtrs()
	st := abi.Status(proxy_dequeue_shared_queue(id, p, n))
	return take(outPtr, outLen), st
}

func hostDefineMetric(kind abi.MetricType, name string) (uint32, abi.Status) {
	st := proxy_define_metric(uint32(kind), sptr(name), uint32(len(name)), outU32Ptr())
	return outU32, abi.Status(st)
}

func hostIncrementMetric(id uint32, delta int64) abi.Status {
	return abi.Status(proxy_increment_metric(id, delta))
}

func hostRecordMetric(id uint32, value uint64) abi.Status {
	return abi.Status(proxy_record_metric(id, value))
}

func hostGetMetric(id uint32) (uint64, abi.Status) {
	st := proxy_get_metric(id, outU64Ptr())
	return outU64, abi.Status(st)
}

func hostGetProperty(path []byte) ([]byte, abi.Status) {
	p, n := outPtrs()
	st := abi.Status(proxy_get_property(bptr(path), uint32(len(path)), p, n))
	return take(outPtr, outLen), st
}

func hostSetProperty(path, value []byte) abi.Status {
	return abi.Status(proxy_set_property(bptr(path), uint32(len(path)), bptr(value), uint32(len(value))))
}

func hostCallForeign(name string, args []byte) ([]byte, abi.Status) {
	p, n := outPtrs()
	st := abi.Status(proxy_call_foreign_function(sptr(name), uint32(len(name)), bptr(args), uint32(len(args)), p, n))
	return take(outPtr, outLen), st
}
