package config

import (
	"errors"
	"strings"
	"testing"
)

func TestTelemetryValid(t *testing.T) {
	cfg, err := Parse([]byte(web+`telemetry:
  sinks:
  - {name: file, type: file, file: {path: /var/log/wasmgate/access.jsonl, max_size_mb: 50, max_age: 168h, compress: true}}
  - {name: siem, type: syslog, format: cef, syslog: {network: tls, address: "siem.example:6514", facility: local4, tls: {ca_file: /etc/ca.pem}}}
  - {name: otel, type: otlp, otlp: {protocol: http, endpoint: "https://otel.example:4318"}}
  - {name: out, type: stdout}
  access: [file, otel]
  decision: [siem]
  flow: [siem]
  event: [siem, out]
  tracing: {otlp: {protocol: grpc, endpoint: "otel.example:4317"}, sampling_ratio: 0.1}
  metrics: {otlp: {protocol: grpc, endpoint: "otel.example:4317", insecure: true}, interval: 15s}
  max_series: 500
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tel := cfg.Telemetry
	if len(tel.Sinks) != 4 || tel.SinksFor("event")[1] != "out" || tel.Tracing.SamplingRatio != 0.1 || tel.MaxSeries != 500 {
		t.Errorf("decoded %+v", tel)
	}
}

func TestTelemetryErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // "path: message" prefixes
	}{
		{"unknown field", "telemetry:\n  sinkz: []\n", []string{"telemetry.sinkz: unknown field"}},
		{"sink type", "telemetry:\n  sinks: [{name: a, type: kafka}]\n",
			[]string{`telemetry.sinks[0].type: "kafka" is not a sink type`}},
		{"missing part", "telemetry:\n  sinks: [{name: a, type: syslog}]\n",
			[]string{"telemetry.sinks[0].syslog: is required for a syslog sink"}},
		{"part of another type", "telemetry:\n  sinks: [{name: a, type: stdout, file: {path: x}}]\n",
			[]string{`telemetry.sinks[0].file: is set but the sink's type is "stdout"`}},
		{"cef off syslog", "telemetry:\n  sinks: [{name: a, type: stdout, format: cef}]\n",
			[]string{`telemetry.sinks[0].format: "cef" is for syslog sinks only`}},
		{"syslog fields", "telemetry:\n  sinks: [{name: a, type: syslog, syslog: {network: sctp, address: nowhere, facility: local9, app_name: \"has space\"}}]\n",
			[]string{`telemetry.sinks[0].syslog.network: "sctp" is not a network`, `telemetry.sinks[0].syslog.address: "nowhere" is not host:port`,
				`telemetry.sinks[0].syslog.facility: "local9" is not a syslog facility`, `telemetry.sinks[0].syslog.app_name:`}},
		{"tls on tcp", "telemetry:\n  sinks: [{name: a, type: syslog, syslog: {network: tcp, address: \"h:1\", tls: {cert_file: c}}}]\n",
			[]string{`telemetry.sinks[0].syslog.tls: is set but the network is "tcp"`, "telemetry.sinks[0].syslog.tls: cert_file and key_file go together"}},
		{"file fields", "telemetry:\n  sinks: [{name: a, type: file, queue_records: -1, file: {max_size_mb: -1}}]\n",
			[]string{"telemetry.sinks[0].queue_records: must not be negative", "telemetry.sinks[0].file.path: is required", "telemetry.sinks[0].file.max_size_mb: must not be negative"}},
		{"otlp", "telemetry:\n  sinks: [{name: a, type: otlp, otlp: {protocol: http, endpoint: \"otel:4318\", insecure: true, tls: {}}}]\n",
			[]string{`telemetry.sinks[0].otlp.endpoint: "otel:4318" is not an http or https URL`, "telemetry.sinks[0].otlp.tls: is set but insecure is true"}},
		{"duplicate and unknown sinks", "telemetry:\n  sinks: [{name: a, type: stdout}, {name: a, type: stdout}]\n  access: [a, a, b]\n",
			[]string{`telemetry.sinks[1].name: duplicate sink name "a"`, `telemetry.access[1]: sink "a" is listed twice`, `telemetry.access[2]: unknown sink "b"`}},
		{"tracing", "telemetry:\n  tracing: {otlp: {protocol: udp, endpoint: x}, sampling_ratio: 2}\n",
			[]string{`telemetry.tracing.otlp.protocol: "udp" is not a protocol`, "telemetry.tracing.sampling_ratio: must be between 0 and 1, not 2"}},
		{"metrics", "telemetry:\n  metrics: {otlp: {protocol: grpc, endpoint: \"h:1\"}, interval: -1s}\n  max_series: -1\n",
			[]string{"telemetry.metrics.interval: must not be negative", "telemetry.max_series: must not be negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(web+tc.in), "t.yaml")
			var list Errors
			if !errors.As(err, &list) {
				t.Fatalf("error %v, want field errors", err)
			}
			for _, want := range tc.want {
				found := false
				for _, fe := range list {
					if strings.HasPrefix(fe.Path+": "+fe.Msg, want) {
						found = true
						if fe.Line == 0 {
							t.Errorf("%s: no line", want)
						}
					}
				}
				if !found {
					t.Errorf("no error %q in:\n%v", want, err)
				}
			}
		})
	}
}
