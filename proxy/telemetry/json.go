package telemetry

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// jsonEncoder writes a record as one JSON object (no newline). Empty
// optional fields are left out.
type jsonEncoder struct{ ts timeCache }

func (e *jsonEncoder) encode(b []byte, r *Record) []byte {
	b = append(b, `{"kind":"`...)
	b = append(b, r.Kind.String()...)
	b = append(b, `","time":"`...)
	b = e.ts.append(b, r.Time)
	b = append(b, '"')
	switch r.Kind {
	case KindAccess:
		a := &r.Access
		b = jsonBytes(b, `,"request_id":`, a.RequestID)
		b = jsonBytes(b, `,"trace_id":`, a.TraceID)
		b = jsonBytes(b, `,"method":`, a.Method)
		b = jsonBytes(b, `,"authority":`, a.Authority)
		b = jsonBytes(b, `,"path":`, a.Path)
		b = jsonString(b, `,"protocol":`, a.Protocol)
		b = jsonInt(b, `,"status":`, int64(a.Status))
		b = jsonDuration(b, `,"duration_ms":`, a.Duration)
		b = jsonInt(b, `,"bytes_received":`, a.BytesReceived)
		b = jsonInt(b, `,"bytes_sent":`, a.BytesSent)
		b = jsonBytes(b, `,"remote_address":`, a.RemoteAddr)
		b = jsonBytes(b, `,"source_identity":`, a.SourceIdentity)
		b = jsonBytes(b, `,"user_agent":`, a.UserAgent)
		b = jsonString(b, `,"listener":`, a.Listener)
		b = jsonString(b, `,"virtual_host":`, a.VirtualHost)
		b = jsonString(b, `,"route":`, a.Route)
		b = jsonString(b, `,"cluster":`, a.Cluster)
		b = jsonString(b, `,"upstream_host":`, a.UpstreamHost)
		b = jsonBytes(b, `,"response_flags":`, a.Flags)
	case KindDecision:
		d := &r.Decision
		b = jsonString(b, `,"verdict":`, d.Verdict.String())
		b = jsonString(b, `,"source":`, d.Source)
		b = jsonString(b, `,"policy":`, d.Policy)
		b = jsonString(b, `,"rule":`, d.Rule)
		b = jsonBytes(b, `,"request_id":`, d.RequestID)
		b = jsonBytes(b, `,"trace_id":`, d.TraceID)
		b = jsonBytes(b, `,"source_identity":`, d.SourceIdentity)
		b = jsonBytes(b, `,"source_address":`, d.SourceAddr)
		b = jsonString(b, `,"destination":`, d.Destination)
		b = jsonBytes(b, `,"destination_identity":`, d.DestinationIdentity)
		b = jsonBytes(b, `,"method":`, d.Method)
		b = jsonBytes(b, `,"authority":`, d.Authority)
		b = jsonBytes(b, `,"path":`, d.Path)
		b = jsonBytes(b, `,"reason":`, d.Reason)
	case KindFlow:
		f := &r.Flow
		b = jsonBytes(b, `,"source_address":`, f.SourceAddr)
		b = jsonBytes(b, `,"destination_address":`, f.DestinationAddr)
		b = jsonBytes(b, `,"source_identity":`, f.SourceIdentity)
		b = jsonBytes(b, `,"destination_identity":`, f.DestinationIdentity)
		b = jsonString(b, `,"listener":`, f.Listener)
		b = jsonInt(b, `,"bytes_in":`, f.BytesIn)
		b = jsonInt(b, `,"bytes_out":`, f.BytesOut)
		b = jsonDuration(b, `,"duration_ms":`, f.Duration)
		b = jsonString(b, `,"tls_version":`, f.TLSVersion)
		b = jsonString(b, `,"tls_cipher":`, f.TLSCipher)
		b = jsonString(b, `,"close_reason":`, f.CloseReason)
	case KindEvent:
		e := &r.Event
		b = jsonString(b, `,"type":`, e.Type)
		b = jsonString(b, `,"severity":`, e.Severity.String())
		b = jsonString(b, `,"message":`, e.Message)
		if len(e.Attrs) > 0 {
			b = append(b, `,"attrs":{`...)
			for i, a := range e.Attrs {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, a.Key)
				b = append(b, ':')
				b = appendJSONString(b, a.Value)
			}
			b = append(b, '}')
		}
	}
	return append(b, '}')
}

// The field writers take the key as it is written, comma and colon
// included (`,"route":`), so that it goes out in one append.

func jsonKey(b []byte, key string) []byte { return append(b, key...) }

func jsonString(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendJSONString(jsonKey(b, key), v)
}

func jsonBytes(b []byte, key string, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return appendJSONString(jsonKey(b, key), v)
}

func jsonInt(b []byte, key string, v int64) []byte {
	return strconv.AppendInt(jsonKey(b, key), v, 10)
}

func jsonDuration(b []byte, key string, d time.Duration) []byte {
	return strconv.AppendFloat(jsonKey(b, key), float64(d.Microseconds())/1000, 'f', 3, 64)
}

const hexDigits = "0123456789abcdef"

// jsonPlain says which bytes go into a JSON string as they are: printable
// ASCII but the double quote and the backslash.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, so the output is always valid JSON. Runs of bytes that need no
// escape are copied whole.
func appendJSONString[S ~string | ~[]byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if jsonPlain[c] {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		if c < utf8.RuneSelf {
			if c == '"' || c == '\\' {
				b = append(b, '\\', c)
			} else {
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		// At most 4 bytes are converted: the copy stays on the stack.
		r, n := utf8.DecodeRune([]byte(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// timeCache writes times as RFC 3339 in UTC with nanoseconds, trailing
// zeros trimmed (as time.RFC3339Nano), formatting the date and the clock
// once per second: consecutive records mostly share their second.
type timeCache struct {
	sec    int64
	prefix []byte // "2006-01-02T15:04:05"
}

func (c *timeCache) append(b []byte, t time.Time) []byte {
	t = t.UTC()
	if s := t.Unix(); s != c.sec || c.prefix == nil {
		c.sec = s
		c.prefix = t.Truncate(time.Second).AppendFormat(c.prefix[:0], "2006-01-02T15:04:05")
	}
	b = append(b, c.prefix...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, 'Z')
}
