package main

import (
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
	if !lowerHex(v[:2]) || !lowerHex(v[3:35]) || !lowerHex(v[36:52]) || !lowerHex(v[53:55]) {
		return tc, false
	}
	hex.Decode(tc.id[:], []byte(v[3:35]))
	hex.Decode(tc.span[:], []byte(v[36:52]))
	var f [1]byte
	hex.Decode(f[:], []byte(v[53:55]))
	tc.flags = f[0]
	if tc.id == ([16]byte{}) || tc.span == ([8]byte{}) {
		return tc, false
	}
	return tc, true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (tc traceContext) String() string {
	b := make([]byte, 0, 55)
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, tc.id[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, tc.span[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, []byte{tc.flags})
	return string(b)
}

// TraceID is the trace id in hex.
func (tc traceContext) TraceID() string { return hex.EncodeToString(tc.id[:]) }

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

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
