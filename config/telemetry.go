package config

import (
	"fmt"
	"net/url"
	"strings"
)

// Telemetry configures where the proxy's records, traces and pushed
// metrics go. Records of each kind go to the sinks named for that kind,
// several at once; every sink has its own bounded queue, so a slow or dead
// sink drops (and counts) records without slowing requests.
type Telemetry struct {
	// Sinks are the destinations records can be sent to.
	Sinks []TelemetrySink `yaml:"sinks,omitempty" json:"sinks,omitempty"`
	// Access, Decision, Flow and Event name the sinks each record kind
	// goes to: access log entries, policy decisions, L4 flows (one per
	// connection) and the proxy's own events.
	Access   []string `yaml:"access,omitempty" json:"access,omitempty"`
	Decision []string `yaml:"decision,omitempty" json:"decision,omitempty"`
	Flow     []string `yaml:"flow,omitempty" json:"flow,omitempty"`
	Event    []string `yaml:"event,omitempty" json:"event,omitempty"`
	// Tracing exports the proxy's own spans; nil means no tracing.
	Tracing *Tracing `yaml:"tracing,omitempty" json:"tracing,omitempty"`
	// Metrics pushes the proxy's metrics over OTLP, besides the Prometheus
	// endpoint; nil means no push.
	Metrics *MetricsPush `yaml:"metrics,omitempty" json:"metrics,omitempty"`
	// MaxSeries caps the label sets of the per-route, per-destination RED
	// metrics; past it, new sets are counted under the label value
	// "overflow". Zero means 2000.
	MaxSeries int `yaml:"max_series,omitempty" json:"max_series,omitempty"`
}

// TelemetrySink is one destination of records.
type TelemetrySink struct {
	Name string `yaml:"name" json:"name"`
	// Type is "file", "stdout", "syslog" or "otlp".
	Type string `yaml:"type" json:"type"`
	// Format is "json" (the default) or "cef" (syslog only).
	Format string `yaml:"format,omitempty" json:"format,omitempty"`
	// QueueRecords is the queue length between requests and the sink.
	// Zero means 4096.
	QueueRecords int         `yaml:"queue_records,omitempty" json:"queue_records,omitempty"`
	File         *FileSink   `yaml:"file,omitempty" json:"file,omitempty"`
	Syslog       *SyslogSink `yaml:"syslog,omitempty" json:"syslog,omitempty"`
	OTLP         *OTLP       `yaml:"otlp,omitempty" json:"otlp,omitempty"`
}

// FileSink writes one record per line to a file, rotated by size and age.
type FileSink struct {
	Path string `yaml:"path" json:"path"`
	// MaxSizeMB rotates the file when it reaches this size. Zero means 100.
	MaxSizeMB int `yaml:"max_size_mb,omitempty" json:"max_size_mb,omitempty"`
	// MaxAge removes rotated files older than this. Zero keeps them.
	MaxAge Duration `yaml:"max_age,omitempty" json:"max_age,omitempty"`
	// MaxBackups bounds the rotated files kept. Zero keeps them all.
	MaxBackups int `yaml:"max_backups,omitempty" json:"max_backups,omitempty"`
	// Compress gzips rotated files.
	Compress bool `yaml:"compress,omitempty" json:"compress,omitempty"`
}

// SyslogSink sends RFC 5424 messages, octet-counted over TCP and TLS.
type SyslogSink struct {
	// Network is "udp", "tcp" or "tls".
	Network string `yaml:"network" json:"network"`
	Address string `yaml:"address" json:"address"`
	// Facility is a facility name (SyslogFacilities); empty means local0.
	Facility string `yaml:"facility,omitempty" json:"facility,omitempty"`
	// AppName is the APP-NAME field; empty means "wasmgate".
	AppName string `yaml:"app_name,omitempty" json:"app_name,omitempty"`
	// TLS configures the "tls" network.
	TLS *ClientTLS `yaml:"tls,omitempty" json:"tls,omitempty"`
}

// ClientTLS is the TLS of a connection the proxy makes to a telemetry
// receiver.
type ClientTLS struct {
	// CAFile holds the PEM roots that verify the server; empty means the
	// system's.
	CAFile string `yaml:"ca_file,omitempty" json:"ca_file,omitempty"`
	// ServerName overrides the name verified; empty means the address's host.
	ServerName string `yaml:"server_name,omitempty" json:"server_name,omitempty"`
	// CertFile and KeyFile are a client certificate, both or neither.
	CertFile string `yaml:"cert_file,omitempty" json:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty" json:"key_file,omitempty"`
}

// OTLP is an OpenTelemetry receiver.
type OTLP struct {
	// Protocol is "grpc" or "http".
	Protocol string `yaml:"protocol" json:"protocol"`
	// Endpoint is host:port for grpc, or a URL for http (the signal's path,
	// such as /v1/logs, is added when the URL has none).
	Endpoint string `yaml:"endpoint" json:"endpoint"`
	// Insecure sends in clear text.
	Insecure bool `yaml:"insecure,omitempty" json:"insecure,omitempty"`
	// TLS verifies the receiver when not Insecure.
	TLS *ClientTLS `yaml:"tls,omitempty" json:"tls,omitempty"`
	// Headers are sent with every export.
	Headers map[string]string `yaml:"headers,omitempty" json:"headers,omitempty"`
	// Timeout bounds one export. Zero means 10s.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// Tracing configures the proxy's spans.
type Tracing struct {
	OTLP OTLP `yaml:"otlp" json:"otlp"`
	// SamplingRatio is the share of new traces sampled, 0 to 1; a request
	// that carries a trace context follows its parent's decision.
	SamplingRatio float64 `yaml:"sampling_ratio" json:"sampling_ratio"`
	// ServiceName is the service.name resource; empty means "wasmgate"
	// (a mesh sidecar's service). ServiceNamespace is service.namespace;
	// empty means none (a mesh sidecar's namespace).
	ServiceName      string `yaml:"service_name,omitempty" json:"service_name,omitempty"`
	ServiceNamespace string `yaml:"service_namespace,omitempty" json:"service_namespace,omitempty"`
}

// MetricsPush pushes metrics over OTLP.
type MetricsPush struct {
	OTLP OTLP `yaml:"otlp" json:"otlp"`
	// Interval is the push period. Zero means 30s.
	Interval Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
}

// ValidateTelemetry checks the telemetry section alone, as Validate
// does: for a file that gives a proxy this section only. Its error, when
// not nil, is an Errors.
func (c *Config) ValidateTelemetry() error {
	v := &errs{}
	c.validateTelemetry(v)
	return v.err()
}

// validateTelemetry checks the telemetry section.
func (c *Config) validateTelemetry(v *errs) {
	t := c.Telemetry
	if t == nil {
		return
	}
	const root = "telemetry"
	seen := map[string]int{}
	for i, s := range t.Sinks {
		p := idx(root+".sinks", i)
		checkName(v, dot(p, "name"), s.Name, i, seen, "sink")
		validateSink(v, p, &s)
	}
	for _, kind := range []struct {
		name  string
		sinks []string
	}{{"access", t.Access}, {"decision", t.Decision}, {"flow", t.Flow}, {"event", t.Event}} {
		dup := map[string]bool{}
		for i, name := range kind.sinks {
			p := idx(dot(root, kind.name), i)
			if _, ok := seen[name]; !ok {
				v.add(p, "unknown sink %q", name)
			} else if dup[name] {
				v.add(p, "sink %q is listed twice", name)
			}
			dup[name] = true
		}
	}
	if t.Tracing != nil {
		p := dot(root, "tracing")
		validateOTLP(v, dot(p, "otlp"), &t.Tracing.OTLP)
		if r := t.Tracing.SamplingRatio; r < 0 || r > 1 || r != r {
			v.add(dot(p, "sampling_ratio"), "must be between 0 and 1, not %v", r)
		}
	}
	if t.Metrics != nil {
		p := dot(root, "metrics")
		validateOTLP(v, dot(p, "otlp"), &t.Metrics.OTLP)
		if t.Metrics.Interval < 0 {
			v.add(dot(p, "interval"), "must not be negative")
		}
	}
	if t.MaxSeries < 0 {
		v.add(dot(root, "max_series"), "must not be negative")
	}
}

func validateSink(v *errs, p string, s *TelemetrySink) {
	switch s.Format {
	case "", "json":
	case "cef":
		if s.Type != "syslog" {
			v.add(dot(p, "format"), `"cef" is for syslog sinks only`)
		}
	default:
		v.add(dot(p, "format"), `%q is not a format (json, cef)`, s.Format)
	}
	if s.QueueRecords < 0 {
		v.add(dot(p, "queue_records"), "must not be negative")
	}
	want := map[string]bool{"file": s.File != nil, "syslog": s.Syslog != nil, "otlp": s.OTLP != nil}
	switch s.Type {
	case "file", "syslog", "otlp":
		if !want[s.Type] {
			v.add(dot(p, s.Type), "is required for a %s sink", s.Type)
		}
	case "stdout":
	case "":
		v.add(dot(p, "type"), "is required (file, stdout, syslog, otlp)")
	default:
		v.add(dot(p, "type"), "%q is not a sink type (file, stdout, syslog, otlp)", s.Type)
	}
	for _, other := range []string{"file", "syslog", "otlp"} {
		if want[other] && other != s.Type {
			v.add(dot(p, other), "is set but the sink's type is %q", s.Type)
		}
	}
	if f := s.File; f != nil && s.Type == "file" {
		fp := dot(p, "file")
		if f.Path == "" {
			v.add(dot(fp, "path"), "is required")
		}
		if f.MaxSizeMB < 0 {
			v.add(dot(fp, "max_size_mb"), "must not be negative")
		}
		if f.MaxAge < 0 {
			v.add(dot(fp, "max_age"), "must not be negative")
		}
		if f.MaxBackups < 0 {
			v.add(dot(fp, "max_backups"), "must not be negative")
		}
	}
	if sl := s.Syslog; sl != nil && s.Type == "syslog" {
		sp := dot(p, "syslog")
		switch sl.Network {
		case "udp", "tcp", "tls":
		default:
			v.add(dot(sp, "network"), "%q is not a network (udp, tcp, tls)", sl.Network)
		}
		checkHostPort(v, dot(sp, "address"), sl.Address)
		if _, ok := SyslogFacilities[sl.Facility]; !ok && sl.Facility != "" {
			v.add(dot(sp, "facility"), "%q is not a syslog facility (local0 to local7, daemon, auth, ...)", sl.Facility)
		}
		if len(sl.AppName) > 48 || strings.ContainsFunc(sl.AppName, func(r rune) bool { return r <= ' ' || r > '~' }) {
			v.add(dot(sp, "app_name"), "%q is not 1 to 48 printable ASCII characters", sl.AppName)
		}
		if sl.TLS != nil {
			if sl.Network != "tls" {
				v.add(dot(sp, "tls"), "is set but the network is %q", sl.Network)
			}
			validateClientTLS(v, dot(sp, "tls"), sl.TLS)
		}
	}
	if o := s.OTLP; o != nil && s.Type == "otlp" {
		validateOTLP(v, dot(p, "otlp"), o)
	}
}

func validateOTLP(v *errs, p string, o *OTLP) {
	switch o.Protocol {
	case "grpc":
		checkHostPort(v, dot(p, "endpoint"), o.Endpoint)
	case "http":
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(dot(p, "endpoint"), "%q is not an http or https URL", o.Endpoint)
		}
	default:
		v.add(dot(p, "protocol"), "%q is not a protocol (grpc, http)", o.Protocol)
	}
	if o.Timeout < 0 {
		v.add(dot(p, "timeout"), "must not be negative")
	}
	if o.TLS != nil {
		if o.Insecure {
			v.add(dot(p, "tls"), "is set but insecure is true")
		}
		validateClientTLS(v, dot(p, "tls"), o.TLS)
	}
	for name := range o.Headers {
		if name == "" || strings.ContainsAny(name, " :\r\n") {
			v.add(dot(p, "headers"), "%q is not a header name", name)
		}
	}
}

func validateClientTLS(v *errs, p string, t *ClientTLS) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add(p, "cert_file and key_file go together")
	}
}

// SyslogFacilities are the facility names of RFC 5424 and their codes.
var SyslogFacilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"solaris-cron": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
	"local5": 21, "local6": 22, "local7": 23,
}

// TelemetryKinds are the record kinds, in the order of their fields.
var TelemetryKinds = []string{"access", "decision", "flow", "event"}

// SinksFor returns the sinks configured for a record kind.
func (t *Telemetry) SinksFor(kind string) []string {
	switch kind {
	case "access":
		return t.Access
	case "decision":
		return t.Decision
	case "flow":
		return t.Flow
	case "event":
		return t.Event
	}
	panic(fmt.Sprintf("config: no record kind %q", kind))
}
