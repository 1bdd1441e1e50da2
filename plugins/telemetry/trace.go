package telemetry

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"
)

// traceContext is a W3C traceparent: version 00, trace id, span id
// (the parent of whoever receives it) and flags.
type traceContext struct {
	id    [16]byte
	span  [8]byte
	flags byte
}

// parseTraceparent parses a version-00 traceparent header. Other
// versions are read by their first four fields, as the spec asks.
func parseTraceparent(v string) (traceContext, bool) {
	var tc traceContext
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return tc, false
	}
	if v[:2] == "ff" || (v[:2] == "00" && len(v) != 55) || (len(v) > 55 && v[55] != '-') {
		return tc, false
	}
	_, okv := parseHex8(v[0:2])
	id0, ok0 := parseHex64(v[3:19])
	id1, ok1 := parseHex64(v[19:35])
	sp, ok2 := parseHex64(v[36:52])
	flags, okf := parseHex8(v[53:55])
	if !okv || !ok0 || !ok1 || !ok2 || !okf {
		return tc, false
	}
	binary.BigEndian.PutUint64(tc.id[:8], id0)
	binary.BigEndian.PutUint64(tc.id[8:], id1)
	binary.BigEndian.PutUint64(tc.span[:], sp)
	tc.flags = flags
	if tc.id == ([16]byte{}) || tc.span == ([8]byte{}) {
		return tc, false
	}
	return tc, true
}

// hexVal maps a lower-case hex digit to its value and any other byte to
// 0xff.
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(hexDigits); i++ {
		t[hexDigits[i]] = byte(i)
	}
	return t
}()

// parseHex64 reads 16 lower-case hex digits. Like encode, it has no loops.
func parseHex64(s string) (uint64, bool) {
	_ = s[15]
	d := [16]byte{
		hexVal[s[0]], hexVal[s[1]], hexVal[s[2]], hexVal[s[3]],
		hexVal[s[4]], hexVal[s[5]], hexVal[s[6]], hexVal[s[7]],
		hexVal[s[8]], hexVal[s[9]], hexVal[s[10]], hexVal[s[11]],
		hexVal[s[12]], hexVal[s[13]], hexVal[s[14]], hexVal[s[15]],
	}
	bad := d[0] | d[1] | d[2] | d[3] | d[4] | d[5] | d[6] | d[7] |
		d[8] | d[9] | d[10] | d[11] | d[12] | d[13] | d[14] | d[15]
	v := uint64(d[0])<<60 | uint64(d[1])<<56 | uint64(d[2])<<52 | uint64(d[3])<<48 |
		uint64(d[4])<<44 | uint64(d[5])<<40 | uint64(d[6])<<36 | uint64(d[7])<<32 |
		uint64(d[8])<<28 | uint64(d[9])<<24 | uint64(d[10])<<20 | uint64(d[11])<<16 |
		uint64(d[12])<<12 | uint64(d[13])<<8 | uint64(d[14])<<4 | uint64(d[15])
	return v, bad&0xf0 == 0
}

// parseHex8 reads 2 lower-case hex digits.
func parseHex8(s string) (byte, bool) {
	hi, lo := hexVal[s[0]], hexVal[s[1]]
	return hi<<4 | lo, (hi|lo)&0xf0 == 0
}

func (tc traceContext) String() string {
	var b [traceparentLen]byte
	tc.encode(&b)
	return string(b[:])
}

// traceparentLen is the length of a version-00 traceparent.
const traceparentLen = 55

// encode writes tc as a version-00 traceparent into b; the trace id is
// b[3:35]. It runs once per request, so it has no loops: a host that can
// interrupt a guest may check every loop iteration.
func (tc *traceContext) encode(b *[traceparentLen]byte) {
	b[0], b[1], b[2] = '0', '0', '-'
	putHex64(b[3:19], binary.BigEndian.Uint64(tc.id[:8]))
	putHex64(b[19:35], binary.BigEndian.Uint64(tc.id[8:]))
	b[35] = '-'
	putHex64(b[36:52], binary.BigEndian.Uint64(tc.span[:]))
	b[52] = '-'
	b[53], b[54] = hexDigits[tc.flags>>4], hexDigits[tc.flags&15]
}

const hexDigits = "0123456789abcdef"

// putHex64 writes v as 16 lower-case hex digits.
func putHex64(b []byte, v uint64) {
	_ = b[15]
	b[0], b[1], b[2], b[3] = hexDigits[v>>60], hexDigits[v>>56&15], hexDigits[v>>52&15], hexDigits[v>>48&15]
	b[4], b[5], b[6], b[7] = hexDigits[v>>44&15], hexDigits[v>>40&15], hexDigits[v>>36&15], hexDigits[v>>32&15]
	b[8], b[9], b[10], b[11] = hexDigits[v>>28&15], hexDigits[v>>24&15], hexDigits[v>>20&15], hexDigits[v>>16&15]
	b[12], b[13], b[14], b[15] = hexDigits[v>>12&15], hexDigits[v>>8&15], hexDigits[v>>4&15], hexDigits[v&15]
}

// TraceID is the trace id in hex.
func (tc traceContext) TraceID() string { return hex.EncodeToString(tc.id[:]) }

// span is one finished request.
type span struct {
	trace          [16]byte
	id, parent     [8]byte
	hasParent      bool
	name           string
	start, end     time.Time
	method, path   string
	authority      string
	status         int
	route, cluster string
}

// OTLP/JSON (opentelemetry-proto, ExportTraceServiceRequest): ids are
// hex, 64-bit integers are strings, enums are numbers.
type (
	otlpRequest struct {
		ResourceSpans []otlpResourceSpans `json:"resourceSpans"`
	}
	otlpResourceSpans struct {
		Resource   otlpResource     `json:"resource"`
		ScopeSpans []otlpScopeSpans `json:"scopeSpans"`
	}
	otlpResource struct {
		Attributes []otlpKV `json:"attributes"`
	}
	otlpScopeSpans struct {
		Scope otlpScope  `json:"scope"`
		Spans []otlpSpan `json:"spans"`
	}
	otlpScope struct {
		Name string `json:"name"`
	}
	otlpSpan struct {
		TraceID      string     `json:"traceId"`
		SpanID       string     `json:"spanId"`
		ParentSpanID string     `json:"parentSpanId,omitempty"`
		Name         string     `json:"name"`
		Kind         int        `json:"kind"`
		Start        string     `json:"startTimeUnixNano"`
		End          string     `json:"endTimeUnixNano"`
		Attributes   []otlpKV   `json:"attributes"`
		Status       otlpStatus `json:"status"`
	}
	otlpStatus struct {
		Code int `json:"code,omitempty"`
	}
	otlpKV struct {
		Key   string    `json:"key"`
		Value otlpValue `json:"value"`
	}
	otlpValue struct {
		String *string `json:"stringValue,omitempty"`
		Int    *string `json:"intValue,omitempty"`
	}
)

const (
	spanKindServer = 2
	statusError    = 2
)

func str(k, v string) otlpKV { return otlpKV{Key: k, Value: otlpValue{String: &v}} }

func integer(k string, v int) otlpKV {
	s := strconv.Itoa(v)
	return otlpKV{Key: k, Value: otlpValue{Int: &s}}
}

// otlpJSON encodes spans as one OTLP/HTTP JSON export request.
func otlpJSON(service string, spans []span) []byte {
	out := make([]otlpSpan, len(spans))
	for i, s := range spans {
		o := otlpSpan{
			TraceID: hex.EncodeToString(s.trace[:]),
			SpanID:  hex.EncodeToString(s.id[:]),
			Name:    s.name,
			Kind:    spanKindServer,
			Start:   strconv.FormatInt(s.start.UnixNano(), 10),
			End:     strconv.FormatInt(s.end.UnixNano(), 10),
			Attributes: []otlpKV{
				str("http.request.method", s.method),
				str("url.path", s.path),
				str("server.address", s.authority),
				integer("http.response.status_code", s.status),
				str("wasmgate.route", s.route),
				str("wasmgate.cluster", s.cluster),
			},
		}
		if s.hasParent {
			o.ParentSpanID = hex.EncodeToString(s.parent[:])
		}
		if s.status >= 500 || s.status == 0 {
			o.Status.Code = statusError
		}
		out[i] = o
	}
	req := otlpRequest{ResourceSpans: []otlpResourceSpans{{
		Resource:   otlpResource{Attributes: []otlpKV{str("service.name", service)}},
		ScopeSpans: []otlpScopeSpans{{Scope: otlpScope{Name: "wasmgate/plugins/telemetry"}, Spans: out}},
	}}}
	b, _ := json.Marshal(req)
	return b
}
