package wasm

import (
	"context"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// hostFunc is one function of the env module. Every argument is an i32
// unless i64 lists its position; every function returns a proxy_status_t.
type hostFunc struct {
	name   string
	params int
	i64    int // index of the one i64 parameter, or -1
	fn     func(in *instance, a []uint64) abi.Status
}

// hostFuncs is the whole env module of ABI v0.2.1, plus the v0.2.0 names
// that Envoy still serves.
var hostFuncs = []hostFunc{
	{"proxy_log", 3, -1, hostLog},
	{"proxy_get_log_level", 1, -1, hostGetLogLevel},
	{"proxy_get_current_time_nanoseconds", 1, -1, hostGetCurrentTime},
	{"proxy_set_tick_period_milliseconds", 1, -1, hostSetTickPeriod},
	{"proxy_set_effective_context", 1, -1, hostSetEffectiveContext},
	{"proxy_done", 0, -1, hostDone},
	{"proxy_call_foreign_function", 6, -1, hostCallForeignFunction},

	{"proxy_get_buffer_bytes", 5, -1, hostGetBufferBytes},
	{"proxy_get_buffer_status", 3, -1, hostGetBufferStatus},
	{"proxy_set_buffer_bytes", 5, -1, hostSetBufferBytes},

	{"proxy_get_header_map_size", 2, -1, hostGetHeaderMapSize},
	{"proxy_get_header_map_pairs", 3, -1, hostGetHeaderMapPairs},
	{"proxy_set_header_map_pairs", 3, -1, hostSetHeaderMapPairs},
	{"proxy_get_header_map_value", 5, -1, hostGetHeaderMapValue},
	{"proxy_add_header_map_value", 5, -1, hostAddHeaderMapValue},
	{"proxy_replace_header_map_value", 5, -1, hostReplaceHeaderMapValue},
	{"proxy_remove_header_map_value", 3, -1, hostRemoveHeaderMapValue},

	{"proxy_continue_stream", 1, -1, hostContinueStream},
	{"proxy_close_stream", 1, -1, hostCloseStream},
	{"proxy_get_status", 3, -1, hostGetStatus},
	{"proxy_send_local_response", 8, -1, hostSendLocalResponse},

	{"proxy_http_call", 10, -1, hostHTTPCall},
	{"proxy_grpc_call", 12, -1, hostGRPCCall},
	{"proxy_grpc_stream", 9, -1, hostGRPCStream},
	{"proxy_grpc_send", 4, -1, hostGRPCSend},
	{"proxy_grpc_cancel", 1, -1, hostGRPCCancel},
	{"proxy_grpc_close", 1, -1, hostGRPCClose},

	{"proxy_set_shared_data", 5, -1, hostSetSharedData},
	{"proxy_get_shared_data", 5, -1, hostGetSharedData},
	{"proxy_register_shared_queue", 3, -1, hostRegisterSharedQueue},
	{"proxy_resolve_shared_queue", 5, -1, hostResolveSharedQueue},
	{"proxy_enqueue_shared_queue", 3, -1, hostEnqueueSharedQueue},
	{"proxy_dequeue_shared_queue", 3, -1, hostDequeueSharedQueue},

	{"proxy_define_metric", 4, -1, hostDefineMetric},
	{"proxy_increment_metric", 2, 1, hostIncrementMetric},
	{"proxy_record_metric", 2, 1, hostRecordMetric},
	{"proxy_get_metric", 2, -1, hostGetMetric},

	{"proxy_get_property", 4, -1, hostGetProperty},
	{"proxy_set_property", 4, -1, hostSetProperty},

	// v0.2.0 names, still served by Envoy.
	{"proxy_continue_request", 0, -1, func(in *instance, _ []uint64) abi.Status {
		return continueStream(in, abi.StreamHTTPRequest)
	}},
	{"proxy_continue_response", 0, -1, func(in *instance, _ []uint64) abi.Status {
		return continueStream(in, abi.StreamHTTPResponse)
	}},
	{"proxy_clear_route_cache", 0, -1, hostClearRouteCache},
}

// instantiateEnv adds the env host module to a runtime.
func instantiateEnv(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder("env")
	for _, h := range hostFuncs {
		params := make([]api.ValueType, h.params)
		for i := range params {
			params[i] = api.ValueTypeI32
		}
		if h.i64 >= 0 {
			params[h.i64] = api.ValueTypeI64
		}
		fn := h.fn
		b.NewFunctionBuilder().
			WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
				c, ok := ctx.(*callCtx)
				if !ok || c.in == nil {
					stack[0] = uint64(abi.StatusInternalFailure)
					return
				}
				stack[0] = uint64(fn(c.in, stack))
			}), params, []api.ValueType{api.ValueTypeI32}).
			WithName(h.name).
			Export(h.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

func u32(v uint64) uint32 { return api.DecodeU32(v) }

func hostLog(in *instance, a []uint64) abi.Status {
	lvl := abi.LogLevel(u32(a[0]))
	if lvl > abi.LogLevelCritical {
		return abi.StatusBadArgument
	}
	msg, ok := in.mem.Read(u32(a[1]), u32(a[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	if ce := in.logger().Check(zapLevel(lvl), ""); ce != nil {
		ce.Message = string(msg)
		ce.Write(zap.Uint32("context_id", in.curID))
	}
	return abi.StatusOK
}

func zapLevel(l abi.LogLevel) zapcore.Level {
	switch l {
	case abi.LogLevelTrace, abi.LogLevelDebug:
		return zapcore.DebugLevel
	case abi.LogLevelInfo:
		return zapcore.InfoLevel
	case abi.LogLevelWarn:
		return zapcore.WarnLevel
	}
	return zapcore.ErrorLevel
}

func hostGetLogLevel(in *instance, a []uint64) abi.Status {
	core := in.logger().Core()
	lvl := abi.LogLevelCritical
	switch {
	case core.Enabled(zapcore.DebugLevel):
		lvl = abi.LogLevelDebug
	case core.Enabled(zapcore.InfoLevel):
		lvl = abi.LogLevelInfo
	case core.Enabled(zapcore.WarnLevel):
		lvl = abi.LogLevelWarn
	case core.Enabled(zapcore.ErrorLevel):
		lvl = abi.LogLevelError
	}
	if !in.mem.WriteUint32Le(u32(a[0]), uint32(lvl)) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hostGetCurrentTime(in *instance, a []uint64) abi.Status {
	if !in.mem.WriteUint64Le(u32(a[0]), uint64(time.Now().UnixNano())) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hostSetTickPeriod(in *instance, a []uint64) abi.Status {
	if in.curRoot == 0 {
		return abi.StatusBadArgument
	}
	in.setTick(in.curRoot, time.Duration(u32(a[0]))*time.Millisecond)
	return abi.StatusOK
}

func hostSetEffectiveContext(in *instance, a []uint64) abi.Status {
	id := u32(a[0])
	if s := in.streams[id]; s != nil {
		in.enterStream(s)
		return abi.StatusOK
	}
	if in.rootSet[id] != nil {
		in.enterRoot(id)
		return abi.StatusOK
	}
	return abi.StatusBadArgument
}

func hostDone(in *instance, _ []uint64) abi.Status {
	if s := in.cur; s != nil && s.doneDeferred {
		s.doneDeferred = false
		return abi.StatusOK
	}
	return abi.StatusNotFound
}

func hostContinueStream(in *instance, a []uint64) abi.Status {
	return continueStream(in, abi.StreamType(u32(a[0])))
}

// continueStream is proxy_continue_stream, as Envoy answers it: the
// request or response of an HTTP stream, or the client's side of a
// connection (continueReading); the upstream side is UNIMPLEMENTED, and a
// direction the context does not have is OK and does nothing.
func continueStream(in *instance, t abi.StreamType) abi.Status {
	network := false
	switch t {
	case abi.StreamHTTPRequest, abi.StreamHTTPResponse:
	case abi.StreamDownstream:
		network = true
	case abi.StreamUpstream:
		return abi.StatusUnimplemented
	default:
		return abi.StatusBadArgument
	}
	s := in.cur
	if s == nil {
		return abi.StatusNotFound
	}
	if network == (s.net != nil) {
		s.resume()
	}
	return abi.StatusOK
}

// hostCloseStream is proxy_close_stream: an HTTP stream is reset, a
// connection closed (either side closes both here); as in Envoy, a
// direction the context does not have is OK and does nothing.
func hostCloseStream(in *instance, a []uint64) abi.Status {
	network := false
	switch abi.StreamType(u32(a[0])) {
	case abi.StreamHTTPRequest, abi.StreamHTTPResponse:
	case abi.StreamDownstream, abi.StreamUpstream:
		network = true
	default:
		return abi.StatusBadArgument
	}
	s := in.cur
	if s == nil {
		return abi.StatusNotFound
	}
	if network == (s.net != nil) {
		s.close()
	}
	return abi.StatusOK
}

// maxGRPCStatus is the largest gRPC status code (UNAUTHENTICATED).
const maxGRPCStatus = 16

func hostSendLocalResponse(in *instance, a []uint64) abi.Status {
	s := in.cur
	if s == nil {
		return abi.StatusNotFound
	}
	details, ok1 := in.mem.Read(u32(a[1]), u32(a[2]))
	body, ok2 := in.mem.Read(u32(a[3]), u32(a[4]))
	hdrs, ok3 := in.mem.Read(u32(a[5]), u32(a[6]))
	if !ok1 || !ok2 || !ok3 {
		return abi.StatusInvalidMemoryAccess
	}
	pairs, ok := parseMap(hdrs, nil)
	if !ok {
		return abi.StatusBadArgument
	}
	code := int(u32(a[0]))
	if code < 100 || code > 999 {
		return abi.StatusBadArgument
	}
	headers := make([][2]string, 0, len(pairs))
	for _, p := range pairs {
		headers = append(headers, [2]string{string(p.k), string(p.v)})
	}
	if g := u32(a[7]); g <= maxGRPCStatus {
		// Before sendLocal, which may resume the request. As in Envoy,
		// only a known status counts (SDKs send -1 for none).
		s.x.SetLocalGRPCStatus(g)
	}
	s.sendLocal(code, body, headers, string(details))
	return abi.StatusOK
}

func hostGetStatus(in *instance, a []uint64) abi.Status {
	if st, ok := in.grpcStatus(a); ok {
		return st
	}
	c := in.callResp
	if c == nil {
		return abi.StatusNotFound
	}
	code := uint32(0)
	msg := ""
	if c.err != nil {
		msg = c.err.Error()
	} else {
		code = uint32(c.resp.StatusCode())
	}
	if !in.mem.WriteUint32Le(u32(a[0]), code) {
		return abi.StatusInvalidMemoryAccess
	}
	in.scratch = append(in.scratch[:0], msg...)
	return in.copyOut(in.scratch, u32(a[1]), u32(a[2]))
}

// hostClearRouteCache records that the request's route must be chosen
// again once its request headers callbacks have run
// (stream.RouteCacheCleared).
func hostClearRouteCache(in *instance, _ []uint64) abi.Status {
	if in.cur != nil {
		in.cur.routeCleared.Store(true)
	}
	return abi.StatusOK
}
