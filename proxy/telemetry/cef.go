package telemetry

import (
	"bytes"
	"net/netip"
	"strconv"
)

// cefEncoder writes a record as one ArcSight Common Event Format line:
//
//	CEF:0|wasmgate|wasmgate|VERSION|SIGNATURE|NAME|SEVERITY|key=value ...
//
// The signature is the kind ("access", "flow") or the kind and its outcome
// ("decision:deny", "event:config_rejected"). Extension keys are CEF's own
// where one fits (src, suser, act, requestMethod, in, out, ...); the rest
// go into labelled custom fields (cs1Label=route cs1=...).
type cefEncoder struct {
	version string
}

func (c cefEncoder) encode(b []byte, r *Record) []byte {
	b = append(b, "CEF:0|wasmgate|wasmgate|"...)
	b = cefHeader(b, c.version)
	b = append(b, '|')
	switch r.Kind {
	case KindAccess:
		a := &r.Access
		sev := 3
		if a.Status >= 500 {
			sev = 6
		}
		b = cefHead(b, "access", "", "HTTP request", sev)
		b = cefTime(b, r)
		b = cefBytes(b, "externalId", a.RequestID)
		b = cefBytes(b, "requestMethod", a.Method)
		b = cefBytes(b, "dhost", a.Authority)
		b = cefBytes(b, "request", a.Path)
		b = cefAddr(b, "src", "spt", a.RemoteAddr)
		b = cefBytes(b, "suser", a.SourceIdentity)
		b = cefBytes(b, "requestClientApplication", a.UserAgent)
		b = cefString(b, "app", a.Protocol)
		b = cefInt(b, "in", a.BytesReceived)
		b = cefInt(b, "out", a.BytesSent)
		b = cefLabelled(b, "cn1", "status", strconv.AppendInt(nil, int64(a.Status), 10))
		b = cefLabelled(b, "cn2", "durationMicros", strconv.AppendInt(nil, a.Duration.Microseconds(), 10))
		b = cefLabelled(b, "cs1", "route", []byte(a.Route))
		b = cefLabelled(b, "cs2", "cluster", []byte(a.Cluster))
		b = cefLabelled(b, "cs3", "upstreamHost", []byte(a.UpstreamHost))
		b = cefLabelled(b, "cs4", "listener", []byte(a.Listener))
		b = cefLabelled(b, "cs5", "responseFlags", a.Flags)
		b = cefLabelled(b, "cs6", "traceId", a.TraceID)
	case KindDecision:
		d := &r.Decision
		sev := [...]int{Allow: 3, Deny: 7, Audit: 5}[min(d.Verdict, Audit)]
		b = cefHead(b, "decision", d.Verdict.String(), "Policy "+d.Verdict.String(), sev)
		b = cefTime(b, r)
		b = cefString(b, "act", d.Verdict.String())
		b = cefBytes(b, "externalId", d.RequestID)
		b = cefBytes(b, "suser", d.SourceIdentity)
		b = cefAddr(b, "src", "spt", d.SourceAddr)
		b = cefBytes(b, "duser", d.DestinationIdentity)
		b = cefString(b, "destinationServiceName", d.Destination)
		b = cefBytes(b, "requestMethod", d.Method)
		b = cefBytes(b, "dhost", d.Authority)
		b = cefBytes(b, "request", d.Path)
		b = cefBytes(b, "reason", d.Reason)
		b = cefLabelled(b, "cs1", "policy", []byte(d.Policy))
		b = cefLabelled(b, "cs2", "rule", []byte(d.Rule))
		b = cefLabelled(b, "cs3", "decider", []byte(d.Source))
		b = cefLabelled(b, "cs6", "traceId", d.TraceID)
	case KindFlow:
		f := &r.Flow
		b = cefHead(b, "flow", "", "Connection closed", 1)
		b = cefTime(b, r)
		b = cefAddr(b, "src", "spt", f.SourceAddr)
		b = cefAddr(b, "dst", "dpt", f.DestinationAddr)
		b = cefBytes(b, "suser", f.SourceIdentity)
		b = cefBytes(b, "duser", f.DestinationIdentity)
		b = cefInt(b, "in", f.BytesIn)
		b = cefInt(b, "out", f.BytesOut)
		b = cefString(b, "reason", f.CloseReason)
		b = cefLabelled(b, "cn1", "durationMicros", strconv.AppendInt(nil, f.Duration.Microseconds(), 10))
		b = cefLabelled(b, "cs1", "tlsVersion", []byte(f.TLSVersion))
		b = cefLabelled(b, "cs2", "tlsCipher", []byte(f.TLSCipher))
		b = cefLabelled(b, "cs3", "listener", []byte(f.Listener))
	case KindEvent:
		e := &r.Event
		sev := [...]int{Info: 3, Warning: 6, Error: 8}[min(e.Severity, Error)]
		b = cefHead(b, "event", e.Type, e.Message, sev)
		b = cefTime(b, r)
		b = cefString(b, "msg", e.Message)
		b = cefLabelled(b, "cs1", "eventType", []byte(e.Type))
		if len(e.Attrs) > 0 {
			var attrs []byte
			for i, a := range e.Attrs {
				if i > 0 {
					attrs = append(attrs, ' ')
				}
				attrs = append(attrs, a.Key...)
				attrs = append(attrs, '=')
				attrs = append(attrs, a.Value...)
			}
			b = cefLabelled(b, "cs2", "attributes", attrs)
		}
	}
	// Each extension pair was written with a leading space.
	return b
}

// cefHead writes the signature, name and severity header fields.
func cefHead(b []byte, kind, outcome, name string, severity int) []byte {
	b = cefHeader(b, kind)
	if outcome != "" {
		b = append(b, ':')
		b = cefHeader(b, outcome)
	}
	b = append(b, '|')
	b = cefHeader(b, name)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(severity), 10)
	return append(b, '|')
}

// cefTime writes rt, the record's time in milliseconds since the epoch,
// which opens the extension (no leading space).
func cefTime(b []byte, r *Record) []byte {
	b = append(b, "rt="...)
	return strconv.AppendInt(b, r.Time.UnixMilli(), 10)
}

// cefHeader escapes a header field: backslash and pipe, and line breaks
// become spaces since a header is one line.
func cefHeader(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '|':
			b = append(b, '\\', c)
		case '\r', '\n':
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return b
}

// cefValue escapes an extension value: backslash, equals sign and line
// breaks (as \n and \r).
func cefValue[S ~string | ~[]byte](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '=':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, c)
		}
	}
	return b
}

func cefKey(b []byte, key string) []byte {
	b = append(b, ' ')
	b = append(b, key...)
	return append(b, '=')
}

func cefString(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return cefValue(cefKey(b, key), v)
}

func cefBytes(b []byte, key string, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return cefValue(cefKey(b, key), v)
}

func cefInt(b []byte, key string, v int64) []byte {
	return strconv.AppendInt(cefKey(b, key), v, 10)
}

// cefLabelled writes a custom field and its label (cs1Label=route cs1=v).
func cefLabelled(b []byte, key, label string, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = cefKey(b, key)
	b = b[:len(b)-1]
	b = append(b, "Label="...)
	b = append(b, label...)
	return cefValue(cefKey(b, key), v)
}

// cefAddr writes an address's IP and port under the given keys; CEF wants
// an IP, so a host name is left out.
func cefAddr(b []byte, ipKey, portKey string, addr []byte) []byte {
	if len(addr) == 0 {
		return b
	}
	host, port := addr, []byte(nil)
	if i := bytes.LastIndexByte(addr, ':'); i >= 0 && (addr[0] == '[' || bytes.Count(addr, []byte(":")) == 1) {
		host, port = addr[:i], addr[i+1:]
	}
	host = bytes.TrimSuffix(bytes.TrimPrefix(host, []byte("[")), []byte("]"))
	ip, err := netip.ParseAddr(string(host))
	if err != nil {
		return b
	}
	b = ip.AppendTo(cefKey(b, ipKey))
	if p, err := strconv.ParseUint(string(port), 10, 16); err == nil {
		b = strconv.AppendUint(cefKey(b, portKey), p, 10)
	}
	return b
}
