// Package abi holds the constants of the proxy-wasm ABI v0.2.1, shared by
// the host (proxy/wasm) and by guest code built with the SDK. It has no
// dependencies and no behaviour.
package abi

// Status is the result of a host function (proxy_status_t).
type Status uint32

// Results of host functions.
const (
	StatusOK                   Status = 0
	StatusNotFound             Status = 1
	StatusBadArgument          Status = 2
	StatusSerializationFailure Status = 3
	StatusParseFailure         Status = 4
	StatusInvalidMemoryAccess  Status = 6
	StatusEmpty                Status = 7
	StatusCasMismatch          Status = 8
	StatusInternalFailure      Status = 10
	StatusUnimplemented        Status = 12
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNotFound:
		return "not_found"
	case StatusBadArgument:
		return "bad_argument"
	case StatusSerializationFailure:
		return "serialization_failure"
	case StatusParseFailure:
		return "parse_failure"
	case StatusInvalidMemoryAccess:
		return "invalid_memory_access"
	case StatusEmpty:
		return "empty"
	case StatusCasMismatch:
		return "cas_mismatch"
	case StatusInternalFailure:
		return "internal_failure"
	case StatusUnimplemented:
		return "unimplemented"
	}
	return "unknown"
}

// LogLevel is a log level (proxy_log_level_t).
type LogLevel uint32

// Log levels.
const (
	LogLevelTrace    LogLevel = 0
	LogLevelDebug    LogLevel = 1
	LogLevelInfo     LogLevel = 2
	LogLevelWarn     LogLevel = 3
	LogLevelError    LogLevel = 4
	LogLevelCritical LogLevel = 5
)

// Action is what a stream callback returns (proxy_action_t).
type Action uint32

// Actions.
const (
	ActionContinue Action = 0
	ActionPause    Action = 1
)

// BufferType names a buffer (proxy_buffer_type_t).
type BufferType uint32

// Buffer types.
const (
	BufferHTTPRequestBody      BufferType = 0
	BufferHTTPResponseBody     BufferType = 1
	BufferDownstreamData       BufferType = 2
	BufferUpstreamData         BufferType = 3
	BufferHTTPCallResponseBody BufferType = 4
	BufferGRPCCallMessage      BufferType = 5
	BufferVMConfiguration      BufferType = 6
	BufferPluginConfiguration  BufferType = 7
	BufferForeignFunctionArgs  BufferType = 8
)

// MapType names a map of HTTP fields or gRPC metadata (proxy_map_type_t).
type MapType uint32

// Map types.
const (
	MapHTTPRequestHeaders       MapType = 0
	MapHTTPRequestTrailers      MapType = 1
	MapHTTPResponseHeaders      MapType = 2
	MapHTTPResponseTrailers     MapType = 3
	MapGRPCCallInitialMetadata  MapType = 4
	MapGRPCCallTrailingMetadata MapType = 5
	MapHTTPCallResponseHeaders  MapType = 6
	MapHTTPCallResponseTrailers MapType = 7
)

// PeerType says which side closed a connection (proxy_peer_type_t).
type PeerType uint32

// Peer types.
const (
	PeerUnknown PeerType = 0
	PeerLocal   PeerType = 1
	PeerRemote  PeerType = 2
)

// StreamType names one direction of a stream (proxy_stream_type_t).
type StreamType uint32

// Stream types.
const (
	StreamHTTPRequest  StreamType = 0
	StreamHTTPResponse StreamType = 1
	StreamDownstream   StreamType = 2
	StreamUpstream     StreamType = 3
)

// MetricType is the kind of a metric (proxy_metric_type_t).
type MetricType uint32

// Metric types.
const (
	MetricCounter   MetricType = 0
	MetricGauge     MetricType = 1
	MetricHistogram MetricType = 2
)

// Names of the functions that mark a module's ABI version. A module
// exports one of them; the host never calls it.
const (
	MarkerV020 = "proxy_abi_version_0_2_0"
	MarkerV021 = "proxy_abi_version_0_2_1"
)

// NoGRPCStatus is the grpc_status argument of proxy_send_local_response
// that means "not a gRPC response" (-1 as an i32).
const NoGRPCStatus = 0xFFFFFFFF
