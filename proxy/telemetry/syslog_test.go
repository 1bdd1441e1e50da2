package telemetry

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
)

var sampleTime = time.Date(2026, 3, 4, 5, 6, 7, 891000000, time.UTC)

// fillSamples fills one record of each kind with known values; the
// values carry the characters each format must escape.
func fillSample(p *Pipeline, k Kind) *Record {
	r := p.Acquire(k)
	r.Time = sampleTime
	switch k {
	case KindAccess:
		a := &r.Access
		a.RequestID = append(a.RequestID, "req-1"...)
		a.TraceID = append(a.TraceID, "0af7651916cd43dd8448eb211c80319c"...)
		a.Method = append(a.Method, "GET"...)
		a.Authority = append(a.Authority, "shop.example"...)
		a.Path = append(a.Path, `/a=b|c\d`...)
		a.Protocol = "HTTP/1.1"
		a.Status = 503
		a.Duration = 1500 * time.Microsecond
		a.BytesReceived, a.BytesSent = 12, 345
		a.RemoteAddr = append(a.RemoteAddr, "10.1.2.3:40000"...)
		a.SourceIdentity = append(a.SourceIdentity, "spiffe://mesh/ns/a/sa/web"...)
		a.UserAgent = append(a.UserAgent, "curl/8"...)
		a.Listener, a.VirtualHost, a.Route, a.Cluster, a.UpstreamHost = "public", "shop", "cart", "cart-svc", "10.9.9.9:8080"
		a.Flags = append(a.Flags, "UF"...)
	case KindDecision:
		d := &r.Decision
		d.Verdict = Deny
		d.Source, d.Policy, d.Rule = "mesh", "default", "deny-all"
		d.RequestID = append(d.RequestID, "req-2"...)
		d.SourceIdentity = append(d.SourceIdentity, "spiffe://mesh/ns/a/sa/web"...)
		d.SourceAddr = append(d.SourceAddr, "[fd00::1]:5000"...)
		d.Destination = "payments"
		d.DestinationIdentity = append(d.DestinationIdentity, "spiffe://mesh/ns/b/sa/pay"...)
		d.Method = append(d.Method, "POST"...)
		d.Path = append(d.Path, "/charge"...)
		d.Reason = append(d.Reason, "no rule\nallows"...)
	case KindFlow:
		f := &r.Flow
		f.SourceAddr = append(f.SourceAddr, "10.1.2.3:40000"...)
		f.DestinationAddr = append(f.DestinationAddr, "10.4.5.6:443"...)
		f.SourceIdentity = append(f.SourceIdentity, "spiffe://mesh/ns/a/sa/web"...)
		f.Listener = "inbound"
		f.BytesIn, f.BytesOut = 1000, 2000
		f.Duration = 2 * time.Second
		f.TLSVersion, f.TLSCipher, f.CloseReason = "TLS 1.3", "TLS_AES_128_GCM_SHA256", "peer_closed"
	case KindEvent:
		e := &r.Event
		e.Type, e.Severity, e.Message = "config_rejected", Error, "routes[0]: bad | value"
		e.Attrs = append(e.Attrs, Attr{"revision", "42"})
	}
	return r
}

func syslogConfig(rs *rsyslog, network, format string) *config.Telemetry {
	sc := &config.SyslogSink{Network: network, Address: rs.addr, AppName: "wasmgate-test", Facility: "local3"}
	if network == "tls" {
		sc.TLS = &config.ClientTLS{CAFile: rs.ca}
	}
	all := []string{"siem"}
	return &config.Telemetry{
		Sinks:  []config.TelemetrySink{{Name: "siem", Type: "syslog", Format: format, Syslog: sc}},
		Access: all, Decision: all, Flow: all, Event: all,
	}
}

// TestSyslogRsyslog sends one record of each kind to a real rsyslogd over
// each transport and format, and checks what rsyslog parsed out of the
// messages: RFC 5424 header fields, and the JSON or CEF body field by
// field.
func TestSyslogRsyslog(t *testing.T) {
	for _, network := range []string{"udp", "tcp", "tls"} {
		for _, format := range []string{"json", "cef"} {
			t.Run(network+"/"+format, func(t *testing.T) {
				rs := startRsyslog(t, network)
				p, err := New(syslogConfig(rs, network, format), WithHostname("proxy-7"),
					WithBackoff(10*time.Millisecond, 100*time.Millisecond))
				if err != nil {
					t.Fatal(err)
				}
				probe(t, rs, p)
				for k := range numKinds {
					p.Emit(fillSample(p, k))
				}
				if err := p.Shutdown(ctx10s(t)); err != nil {
					t.Fatalf("shutdown: %v", err)
				}
				lines := rs.waitFor(t, "one record of each kind", func(ls []rsyslogLine) bool {
					n := 0
					for _, l := range ls {
						if l.Time == "2026-03-04T05:06:07.891+00:00" || strings.HasPrefix(l.Time, "2026-03-04T05:06:07.891") {
							n++
						}
					}
					return n == int(numKinds)
				})
				seen := map[string]bool{}
				for _, l := range lines {
					if !strings.HasPrefix(l.Time, "2026-03-04T05:06:07.891") {
						continue
					}
					seen[l.MsgID] = true
					checkHeader(t, l)
					if format == "json" {
						checkJSONBody(t, l.MsgID, l.Msg)
					} else {
						checkCEFBody(t, l.MsgID, l.Msg)
					}
				}
				for k := range numKinds {
					if !seen[k.String()] {
						t.Errorf("no %s record arrived", k)
					}
				}
			})
		}
	}
}

func checkHeader(t *testing.T, l rsyslogLine) {
	t.Helper()
	wantSev := map[string]int{"access": 4, "decision": 4, "flow": 6, "event": 3}[l.MsgID]
	if want := strconv.Itoa(19*8 + wantSev); l.Pri != want {
		t.Errorf("%s: pri %s, want %s", l.MsgID, l.Pri, want)
	}
	if l.Protocol != "1" {
		t.Errorf("%s: protocol-version %q, want 1 (RFC 5424)", l.MsgID, l.Protocol)
	}
	if l.Hostname != "proxy-7" || l.AppName != "wasmgate-test" || l.ProcID != strconv.Itoa(os.Getpid()) {
		t.Errorf("%s: hostname %q app-name %q procid %q", l.MsgID, l.Hostname, l.AppName, l.ProcID)
	}
}

func checkJSONBody(t *testing.T, kind, msg string) {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal([]byte(msg), &got); err != nil {
		t.Fatalf("%s: body %q is not JSON: %v", kind, msg, err)
	}
	want := map[string]map[string]any{
		"access": {"kind": "access", "request_id": "req-1", "path": `/a=b|c\d`, "status": 503.0, "duration_ms": 1.5,
			"bytes_sent": 345.0, "source_identity": "spiffe://mesh/ns/a/sa/web", "route": "cart", "response_flags": "UF"},
		"decision": {"kind": "decision", "verdict": "deny", "rule": "deny-all", "source": "mesh",
			"destination": "payments", "reason": "no rule\nallows", "source_address": "[fd00::1]:5000"},
		"flow":  {"kind": "flow", "bytes_in": 1000.0, "bytes_out": 2000.0, "duration_ms": 2000.0, "tls_version": "TLS 1.3", "close_reason": "peer_closed"},
		"event": {"kind": "event", "type": "config_rejected", "severity": "error", "message": "routes[0]: bad | value"},
	}[kind]
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %#v, want %#v", kind, k, got[k], v)
		}
	}
	if got["time"] != "2026-03-04T05:06:07.891Z" {
		t.Errorf("%s: time %v", kind, got["time"])
	}
}

func checkCEFBody(t *testing.T, kind, msg string) {
	t.Helper()
	c, err := parseCEF(msg)
	if err != nil {
		t.Fatalf("%s: %q: %v", kind, msg, err)
	}
	type header struct{ sig, name, sev string }
	wantHead := map[string]header{
		"access":   {"access", "HTTP request", "6"},
		"decision": {"decision:deny", "Policy deny", "7"},
		"flow":     {"flow", "Connection closed", "1"},
		"event":    {"event:config_rejected", "routes[0]: bad | value", "8"},
	}[kind]
	if c.header[0] != "CEF:0" || c.header[1] != "wasmgate" || c.header[2] != "wasmgate" {
		t.Errorf("%s: header %q", kind, c.header)
	}
	if got := (header{c.header[4], c.header[5], c.header[6]}); got != wantHead {
		t.Errorf("%s: signature, name, severity %+v, want %+v", kind, got, wantHead)
	}
	want := map[string]map[string]string{
		"access": {"rt": strconv.FormatInt(sampleTime.UnixMilli(), 10), "externalId": "req-1", "requestMethod": "GET",
			"dhost": "shop.example", "request": `/a=b|c\d`, "src": "10.1.2.3", "spt": "40000",
			"suser": "spiffe://mesh/ns/a/sa/web", "in": "12", "out": "345", "cn1Label": "status", "cn1": "503",
			"cn2Label": "durationMicros", "cn2": "1500", "cs1Label": "route", "cs1": "cart", "cs2": "cart-svc",
			"cs5": "UF", "cs6": "0af7651916cd43dd8448eb211c80319c", "app": "HTTP/1.1"},
		"decision": {"act": "deny", "externalId": "req-2", "suser": "spiffe://mesh/ns/a/sa/web", "src": "fd00::1", "spt": "5000",
			"duser": "spiffe://mesh/ns/b/sa/pay", "destinationServiceName": "payments", "requestMethod": "POST",
			"request": "/charge", "reason": "no rule\nallows", "cs1Label": "policy", "cs1": "default", "cs2Label": "rule", "cs2": "deny-all", "cs3": "mesh"},
		"flow": {"src": "10.1.2.3", "spt": "40000", "dst": "10.4.5.6", "dpt": "443", "in": "1000", "out": "2000",
			"reason": "peer_closed", "cn1": "2000000", "cs1": "TLS 1.3", "cs2": "TLS_AES_128_GCM_SHA256", "cs3": "inbound"},
		"event": {"msg": "routes[0]: bad | value", "cs1Label": "eventType", "cs1": "config_rejected", "cs2": "revision=42"},
	}[kind]
	for k, v := range want {
		if c.ext[k] != v {
			t.Errorf("%s: %s = %q, want %q", kind, k, c.ext[k], v)
		}
	}
}

type cef struct {
	header [7]string
	ext    map[string]string
}

// parseCEF reads a CEF line the way a SIEM does: seven header fields split
// on unescaped pipes, then key=value pairs whose values run to the space
// before the next unescaped "key=".
func parseCEF(s string) (cef, error) {
	var c cef
	i := 0
	for f := range 7 {
		var b strings.Builder
		for ; i < len(s); i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				b.WriteByte(s[i])
				continue
			}
			if s[i] == '|' {
				break
			}
			b.WriteByte(s[i])
		}
		if i >= len(s) {
			return c, errString("fewer than 8 pipe-separated parts")
		}
		c.header[f] = b.String()
		i++
	}
	c.ext = map[string]string{}
	rest := s[i:]
	// Find the positions of unescaped '=' and the key before each.
	type kv struct{ key, start int }
	var keys []kv
	for j := 0; j < len(rest); j++ {
		if rest[j] == '\\' {
			j++
			continue
		}
		if rest[j] == '=' {
			k := strings.LastIndexByte(rest[:j], ' ') + 1
			keys = append(keys, kv{k, j + 1})
		}
	}
	for n, k := range keys {
		end := len(rest)
		if n+1 < len(keys) {
			end = keys[n+1].key - 1
		}
		key := rest[k.key : k.start-1]
		raw := rest[k.start:end]
		var b strings.Builder
		for j := 0; j < len(raw); j++ {
			if raw[j] == '\\' && j+1 < len(raw) {
				j++
				switch raw[j] {
				case 'n':
					b.WriteByte('\n')
				case 'r':
					b.WriteByte('\r')
				default:
					b.WriteByte(raw[j])
				}
				continue
			}
			b.WriteByte(raw[j])
		}
		c.ext[key] = b.String()
	}
	return c, nil
}

type errString string

func (e errString) Error() string { return string(e) }
