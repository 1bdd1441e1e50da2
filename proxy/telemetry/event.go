package telemetry

import "time"

// The proxy's own event types.
const (
	EventConfigApplied      = "config_applied"
	EventConfigRejected     = "config_rejected"
	EventCertificateRotated = "certificate_rotated"
	EventPluginFailed       = "plugin_failed"
)

// Event emits one of the proxy's own events, stamped now, when events
// have a sink. attrs are copied.
func (p *Pipeline) Event(typ string, sev Severity, msg string, attrs ...Attr) {
	if !p.Enabled(KindEvent) {
		return
	}
	r := p.Acquire(KindEvent)
	r.Time = time.Now()
	r.Event.Type, r.Event.Severity, r.Event.Message = typ, sev, msg
	r.Event.Attrs = append(r.Event.Attrs, attrs...)
	p.Emit(r)
}

// CertificateRotated emits the certificate_rotated event of a renewed
// workload certificate: its SPIFFE ID, serial number (hex), expiry
// (RFC 3339) and the authority that signed it.
func (p *Pipeline) CertificateRotated(id, serial string, notAfter time.Time, authority string) {
	p.Event(EventCertificateRotated, Info, "workload certificate rotated",
		Attr{Key: "spiffe_id", Value: id}, Attr{Key: "serial", Value: serial},
		Attr{Key: "not_after", Value: notAfter.UTC().Format(time.RFC3339)}, Attr{Key: "authority", Value: authority})
}
