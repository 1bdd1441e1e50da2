package config

import (
	"strings"
	"testing"
)

func TestValidateProtocols(t *testing.T) {
	const vhost = `
virtual_hosts:
- name: web
  domains: ["*"]
  routes:
  - cluster: api
`
	tests := []struct {
		name     string
		listener string // the listener's extra lines, indented by four
		cluster  string // the cluster's extra lines, indented by two
		want     []string
	}{
		{name: "tls and protocols", listener: `
  tls:
    certificates:
    - {cert_file: a.crt, key_file: a.key, server_names: ["a.example.com", "*.b.example.com"]}
    min_version: "1.3"
    client_ca_file: ca.pem
    client_auth: optional
    forward_client_cert: sanitize_set
  http3: {enabled: true, allow_0rtt: false}
  http2: {max_concurrent_streams: 100, initial_stream_window: 65535}`,
			cluster: `
  protocol: http2
  tls: {sni: api.internal, ca_file: ca.pem, cert_file: c.crt, key_file: c.key}`},
		{name: "no certificate", listener: `
  tls: {}`, want: []string{"listeners[0].tls.certificates: at least one certificate is required"}},
		{name: "missing files", listener: `
  tls:
    certificates: [{cert_file: a.crt}]`, want: []string{"listeners[0].tls.certificates[0].key_file: is required"}},
		{name: "bad names", listener: `
  tls:
    certificates:
    - {cert_file: a, key_file: a, server_names: ["a.*.com", "x..y"]}
    - {cert_file: b, key_file: b, server_names: ["A.example.com", "a.example.com"]}`, want: []string{
			`listeners[0].tls.certificates[0].server_names[0]: "a.*.com" is not a DNS name`,
			`listeners[0].tls.certificates[0].server_names[1]: "x..y" has an empty or too long label`,
			`listeners[0].tls.certificates[1].server_names[1]: server name "a.example.com" is already served by certificates[1]`,
		}},
		{name: "versions", listener: `
  tls:
    certificates: [{cert_file: a, key_file: a}]
    min_version: "1.3"
    max_version: "1.2"`, want: []string{"listeners[0].tls.max_version: is below min_version"}},
		{name: "unknown version", listener: `
  tls:
    certificates: [{cert_file: a, key_file: a}]
    min_version: "1.1"`, want: []string{`listeners[0].tls.min_version: unknown TLS version "1.1"`}},
		{name: "client auth without CA", listener: `
  tls:
    certificates: [{cert_file: a, key_file: a}]
    client_auth: required`, want: []string{"listeners[0].tls.client_ca_file: is required with client_auth required"}},
		{name: "unknown modes", listener: `
  tls:
    certificates: [{cert_file: a, key_file: a}]
    client_auth: maybe
    forward_client_cert: append`, want: []string{
			`listeners[0].tls.client_auth: unknown mode "maybe"`,
			`listeners[0].tls.forward_client_cert: unknown mode "append"`,
		}},
		{name: "h2c on tls", listener: `
  tls:
    certificates: [{cert_file: a, key_file: a}]
  http2: {h2c: true}`, want: []string{"listeners[0].http2.h2c: is for listeners without tls"}},
		{name: "http2 limits", listener: `
  http2: {initial_stream_window: 100, max_read_frame_size: 10}`, want: []string{
			"listeners[0].http2.initial_stream_window: must be between 65535",
			"listeners[0].http2.max_read_frame_size: must be between 16384",
		}},
		{name: "http3 without tls", listener: `
  http3: {enabled: true}`, want: []string{"listeners[0].http3.enabled: HTTP/3 needs tls"}},
		{name: "http3 with TLS 1.2 only", listener: `
  tls:
    certificates: [{cert_file: a, key_file: a}]
    max_version: "1.2"
  http3: {enabled: true}`, want: []string{"listeners[0].http3.enabled: HTTP/3 needs TLS 1.3"}},
		{name: "cluster protocol", cluster: `
  protocol: spdy`, want: []string{`clusters[0].protocol: unknown protocol "spdy"`}},
		{name: "downstream protocol with alpn", cluster: `
  protocol: downstream
  tls: {alpn: [h2]}`, want: []string{"clusters[0].tls.alpn: must be empty with protocol downstream"}},
		{name: "cluster client cert half", cluster: `
  tls: {cert_file: c.crt}`, want: []string{"clusters[0].tls: cert_file and key_file go together"}},
		{name: "cluster sni", cluster: `
  tls: {sni: "*.x"}`, want: []string{`clusters[0].tls.sni: "*.x" is not a server name`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := "listeners:\n- name: main\n  address: \":8443\"" + tc.listener +
				"\nclusters:\n- name: api\n  endpoints: [{address: \"10.0.0.1:443\"}]" + tc.cluster + vhost
			_, err := Parse([]byte(in), "t.yaml")
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain %q", err, w)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%v", n, len(tc.want), err)
			}
		})
	}
}
