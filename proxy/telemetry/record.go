// Package telemetry carries the proxy's records (access log entries,
// policy decisions, L4 flows and the proxy's own events) to central sinks:
// rotated files, stdout, syslog (RFC 5424, JSON or CEF) and OpenTelemetry
// logs over OTLP.
//
// A record never waits on a sink. The request path takes a pooled Record,
// fills it and hands it to Pipeline.Emit, which offers it to the bounded
// queue of every sink configured for its kind. A full queue drops the
// record for that sink and counts it; one goroutine per sink encodes and
// writes, reconnecting with backoff when its receiver is away.
package telemetry

import (
	"time"
)

// Kind is a record kind.
type Kind uint8

// The record kinds.
const (
	KindAccess Kind = iota
	KindDecision
	KindFlow
	KindEvent
	numKinds
)

var kindNames = [numKinds]string{"access", "decision", "flow", "event"}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "unknown"
}

// ParseKind reads a kind's name.
func ParseKind(s string) (Kind, bool) {
	for i, n := range kindNames {
		if n == s {
			return Kind(i), true
		}
	}
	return 0, false
}

// Record is one record of one kind: the fields of Kind's struct are the
// ones written. Byte slices are owned by the record (fill them with
// append(r.X[:0], ...)); strings are expected to be long-lived values such
// as route names, so that filling a record allocates nothing.
//
// A Record comes from Pipeline.Acquire and goes to Pipeline.Emit or
// Pipeline.Release; it must not be used after either.
type Record struct {
	Kind Kind
	// Time is when the record's subject started (a request, a connection)
	// or happened (a decision, an event).
	Time time.Time

	Access   Access
	Decision Decision
	Flow     Flow
	Event    Event

	// refs counts the sinks still holding the record. Emit sets it with
	// a plain store before the record is queued anywhere (the queues
	// order it before every sink's read); sinks then count it down
	// atomically.
	refs int32
}

// Access is one request.
type Access struct {
	RequestID     []byte
	TraceID       []byte
	Method        []byte
	Authority     []byte
	Path          []byte
	Protocol      string
	Status        int
	Duration      time.Duration
	BytesReceived int64
	BytesSent     int64
	RemoteAddr    []byte
	// SourceIdentity is the peer's SPIFFE ID under mTLS.
	SourceIdentity []byte
	UserAgent      []byte
	Listener       string
	VirtualHost    string
	Route          string
	Cluster        string
	UpstreamHost   string
	// Flags are the response flags (Envoy's short codes), as text.
	Flags []byte
}

// Verdict is a policy decision's outcome.
type Verdict uint8

// The verdicts. Audit allows the request and records that a rule in audit
// mode would have denied it.
const (
	Allow Verdict = iota
	Deny
	Audit
)

var verdictNames = [...]string{"allow", "deny", "audit"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Decision is one policy decision.
type Decision struct {
	Verdict Verdict
	// Source is what made it: "authz" (a filter) or "mesh" (the mesh
	// policy).
	Source    string
	Policy    string
	Rule      string
	RequestID []byte
	// TraceID is the request's trace, in hex, when the proxy traces: the
	// trace that shows the decided request's path.
	TraceID        []byte
	SourceIdentity []byte
	SourceAddr     []byte
	// Destination is the destination service, DestinationIdentity its
	// SPIFFE ID when known.
	Destination         string
	DestinationIdentity []byte
	Method              []byte
	Authority           []byte
	Path                []byte
	Reason              []byte
}

// Flow is one L4 connection, recorded when it closes.
type Flow struct {
	SourceAddr          []byte
	DestinationAddr     []byte
	SourceIdentity      []byte
	DestinationIdentity []byte
	Listener            string
	BytesIn             int64
	BytesOut            int64
	Duration            time.Duration
	// TLSVersion and TLSCipher are empty for clear text.
	TLSVersion  string
	TLSCipher   string
	CloseReason string
}

// Severity ranks an event.
type Severity uint8

// The severities, as syslog's: Info is 6, Warning 4, Error 3.
const (
	Info Severity = iota
	Warning
	Error
)

var severityNames = [...]string{"info", "warning", "error"}

func (s Severity) String() string {
	if int(s) < len(severityNames) {
		return severityNames[s]
	}
	return "unknown"
}

// Event is something the proxy did or suffered: a configuration applied or
// rejected, a certificate rotated, a plugin failed.
type Event struct {
	// Type is a short stable name such as "config_applied",
	// "config_rejected", "certificate_rotated", "plugin_failed".
	Type     string
	Severity Severity
	Message  string
	// Attrs are extra key/value pairs, in order.
	Attrs []Attr
}

// Attr is one key/value pair of an event.
type Attr struct{ Key, Value string }

// reset empties r for reuse as a record of kind k, keeping its buffers.
// Only kind k's fields are cleared: the encoders read no other.
func (r *Record) reset(k Kind) {
	switch k {
	case KindAccess:
		a := &r.Access
		*a = Access{
			RequestID: a.RequestID[:0], TraceID: a.TraceID[:0], Method: a.Method[:0], Authority: a.Authority[:0],
			Path: a.Path[:0], RemoteAddr: a.RemoteAddr[:0], SourceIdentity: a.SourceIdentity[:0],
			UserAgent: a.UserAgent[:0], Flags: a.Flags[:0],
		}
	case KindDecision:
		d := &r.Decision
		*d = Decision{
			RequestID: d.RequestID[:0], TraceID: d.TraceID[:0], SourceIdentity: d.SourceIdentity[:0], SourceAddr: d.SourceAddr[:0],
			DestinationIdentity: d.DestinationIdentity[:0], Method: d.Method[:0], Authority: d.Authority[:0],
			Path: d.Path[:0], Reason: d.Reason[:0],
		}
	case KindFlow:
		f := &r.Flow
		*f = Flow{
			SourceAddr: f.SourceAddr[:0], DestinationAddr: f.DestinationAddr[:0],
			SourceIdentity: f.SourceIdentity[:0], DestinationIdentity: f.DestinationIdentity[:0],
		}
	case KindEvent:
		r.Event = Event{Attrs: r.Event.Attrs[:0]}
	}
	r.Kind = k
	r.Time = time.Time{}
}
