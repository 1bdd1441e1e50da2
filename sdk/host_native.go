//go:build !wasip1

package sdk

import (
	"encoding/binary"
	"strings"
	"time"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// Built for anything but wasip1, the package runs against an in-memory
// host, so that its logic can be tested with a plain `go test`. The host
// is a process-wide value reset by the tests.

type memHost struct {
	maps      map[abi.MapType]Fields
	buffers   map[abi.BufferType][]byte
	props     map[string][]byte
	logs      []string
	level     abi.LogLevel
	now       time.Time
	local     *localResponse
	resumed   []abi.StreamType
	closed    []abi.StreamType
	tick      uint32
	calls     []memCall
	callErr   string
	shared    map[string]memShared
	queues    map[string]uint32
	items     map[uint32][][]byte
	metrics   map[metricKey]uint32
	values    map[uint32]int64
	effective uint32
	foreign   map[string]func(args []byte) ([]byte, abi.Status)
}

type localResponse struct {
	status  int
	body    []byte
	headers Fields
	details string
}

type memCall struct {
	cluster string
	headers Fields
	body    []byte
	timeout uint32
}

type memShared struct {
	value []byte
	cas   uint32
}

var mem = newMemHost()

func newMemHost() *memHost {
	return &memHost{
		maps:    map[abi.MapType]Fields{},
		buffers: map[abi.BufferType][]byte{},
		props:   map[string][]byte{},
		shared:  map[string]memShared{},
		queues:  map[string]uint32{},
		items:   map[uint32][][]byte{},
		metrics: map[metricKey]uint32{},
		values:  map[uint32]int64{},
		now:     time.Unix(1700000000, 0),
	}
}

func hostLog(level abi.LogLevel, msg string) abi.Status {
	mem.logs = append(mem.logs, levelName(level)+": "+msg)
	return abi.StatusOK
}

func levelName(l abi.LogLevel) string {
	return [...]string{"trace", "debug", "info", "warn", "error", "critical"}[min(int(l), 5)]
}

func hostLogLevel() (abi.LogLevel, abi.Status) { return mem.level, abi.StatusOK }

func hostNow() int64 { return mem.now.UnixNano() }

func hostSetTickPeriod(ms uint32) abi.Status { mem.tick = ms; return abi.StatusOK }

func hostSetEffectiveContext(id uint32) abi.Status { mem.effective = id; return abi.StatusOK }

func hostGetBuffer(t abi.BufferType, start, size uint32) ([]byte, abi.Status) {
	b, ok := mem.buffers[t]
	if !ok {
		return nil, abi.StatusNotFound
	}
	if int(start) > len(b) {
		return nil, abi.StatusBadArgument
	}
	end := min(int(start)+int(size), len(b))
	return append([]byte(nil), b[start:end]...), abi.StatusOK
}

func hostBufferSize(t abi.BufferType) (uint32, abi.Status) {
	b, ok := mem.buffers[t]
	if !ok {
		return 0, abi.StatusNotFound
	}
	return uint32(len(b)), abi.StatusOK
}

func hostSetBuffer(t abi.BufferType, start, size uint32, data []byte) abi.Status {
	b, ok := mem.buffers[t]
	if !ok {
		return abi.StatusNotFound
	}
	if start != 0 && int(start) < len(b) {
		return abi.StatusBadArgument // as Envoy: from the start, or at the end
	}
	s := min(int(start), len(b))
	e := len(b)
	if int(size) < e-s {
		e = s + int(size)
	}
	out := append(append(append([]byte(nil), b[:s]...), data...), b[e:]...)
	mem.buffers[t] = out
	return abi.StatusOK
}

func hostGetMapPairs(t abi.MapType) ([]byte, abi.Status) {
	f, ok := mem.maps[t]
	if !ok {
		return nil, abi.StatusNotFound
	}
	return encodeFields(f), abi.StatusOK
}

func hostSetMapPairs(t abi.MapType, data []byte) abi.Status {
	f, err := decodeFields(data)
	if err != nil {
		return abi.StatusBadArgument
	}
	mem.maps[t] = f
	return abi.StatusOK
}

func hostGetMapValue(t abi.MapType, key string) (string, abi.Status) {
	f, ok := mem.maps[t]
	if !ok {
		return "", abi.StatusNotFound
	}
	vs := f.Values(key)
	if len(vs) == 0 {
		return "", abi.StatusNotFound
	}
	return strings.Join(vs, ","), abi.StatusOK
}

func hostAddMapValue(t abi.MapType, key, value string) abi.Status {
	f := mem.maps[t]
	f.Add(strings.ToLower(key), value)
	mem.maps[t] = f
	return abi.StatusOK
}

func hostReplaceMapValue(t abi.MapType, key, value string) abi.Status {
	f := mem.maps[t]
	f.Set(strings.ToLower(key), value)
	mem.maps[t] = f
	return abi.StatusOK
}

func hostRemoveMapValue(t abi.MapType, key string) abi.Status {
	f := mem.maps[t]
	f.Del(key)
	mem.maps[t] = f
	return abi.StatusOK
}

func hostContinueStream(t abi.StreamType) abi.Status {
	mem.resumed = append(mem.resumed, t)
	return abi.StatusOK
}

func hostCloseStream(t abi.StreamType) abi.Status {
	mem.closed = append(mem.closed, t)
	return abi.StatusOK
}

func hostGetStatus() (uint32, string, abi.Status) { return 0, mem.callErr, abi.StatusOK }

func hostSendLocalResponse(status uint32, details string, body, headers []byte, _ uint32) abi.Status {
	h, err := decodeFields(headers)
	if err != nil || status < 100 || status > 999 {
		return abi.StatusBadArgument
	}
	mem.local = &localResponse{int(status), append([]byte(nil), body...), h, details}
	return abi.StatusOK
}

func hostHTTPCall(cluster string, headers, body, _ []byte, timeoutMS uint32) (uint32, abi.Status) {
	h, err := decodeFields(headers)
	if err != nil {
		return 0, abi.StatusBadArgument
	}
	mem.calls = append(mem.calls, memCall{cluster, h, append([]byte(nil), body...), timeoutMS})
	return uint32(len(mem.calls)), abi.StatusOK
}

func hostGetSharedData(key string) ([]byte, uint32, abi.Status) {
	v, ok := mem.shared[key]
	if !ok {
		return nil, 0, abi.StatusNotFound
	}
	return append([]byte(nil), v.value...), v.cas, abi.StatusOK
}

func hostSetSharedData(key string, value []byte, cas uint32) abi.Status {
	v, ok := mem.shared[key]
	if cas != 0 && (!ok || v.cas != cas) {
		return abi.StatusCasMismatch
	}
	mem.shared[key] = memShared{append([]byte(nil), value...), v.cas + 1}
	return abi.StatusOK
}

func hostRegisterQueue(name string) (uint32, abi.Status) {
	id, ok := mem.queues[name]
	if !ok {
		id = uint32(len(mem.queues) + 1)
		mem.queues[name] = id
	}
	return id, abi.StatusOK
}

func hostResolveQueue(_, name string) (uint32, abi.Status) {
	id, ok := mem.queues[name]
	if !ok {
		return 0, abi.StatusNotFound
	}
	return id, abi.StatusOK
}

func hostEnqueue(id uint32, value []byte) abi.Status {
	mem.items[id] = append(mem.items[id], append([]byte(nil), value...))
	return abi.StatusOK
}

func hostDequeue(id uint32) ([]byte, abi.Status) {
	q := mem.items[id]
	if len(q) == 0 {
		return nil, abi.StatusEmpty
	}
	mem.items[id] = q[1:]
	return q[0], abi.StatusOK
}

func hostDefineMetric(kind abi.MetricType, name string) (uint32, abi.Status) {
	// Like wasmgate's host, one definition per configuration.
	k := metricKey{kind: kind, name: name}
	if curRoot != nil {
		k.root = curRoot.id
	}
	id, ok := mem.metrics[k]
	if !ok {
		id = uint32(len(mem.metrics)+1)<<2 | uint32(kind)
		mem.metrics[k] = id
	}
	return id, abi.StatusOK
}

func hostIncrementMetric(id uint32, delta int64) abi.Status {
	mem.values[id] += delta
	return abi.StatusOK
}

func hostRecordMetric(id uint32, value uint64) abi.Status {
	if abi.MetricType(id&3) == abi.MetricHistogram {
		mem.values[id]++
		return abi.StatusOK
	}
	mem.values[id] = int64(value)
	return abi.StatusOK
}

func hostGetMetric(id uint32) (uint64, abi.Status) { return uint64(mem.values[id]), abi.StatusOK }

func hostGetProperty(path []byte) ([]byte, abi.Status) {
	v, ok := mem.props[string(path)]
	if !ok {
		return nil, abi.StatusNotFound
	}
	return append([]byte(nil), v...), abi.StatusOK
}

func hostSetProperty(path, value []byte) abi.Status {
	if len(path) == 0 {
		return abi.StatusBadArgument
	}
	mem.props[string(path)] = append([]byte(nil), value...)
	return abi.StatusOK
}

// memProperty encodes a property value for the in-memory host.
func memProperty(v any) []byte {
	switch v := v.(type) {
	case string:
		return []byte(v)
	case []byte:
		return v
	case bool:
		if v {
			return []byte{1}
		}
		return []byte{0}
	case int:
		return binary.LittleEndian.AppendUint64(nil, uint64(v))
	case int64:
		return binary.LittleEndian.AppendUint64(nil, uint64(v))
	}
	return nil
}

func hostCallForeign(name string, args []byte) ([]byte, abi.Status) {
	fn := mem.foreign[name]
	if fn == nil {
		return nil, abi.StatusNotFound
	}
	return fn(args)
}
