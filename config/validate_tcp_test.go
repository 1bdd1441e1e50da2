package config

import (
	"strings"
	"testing"
)

func TestValidateTCPProxy(t *testing.T) {
	const base = `
listeners:
- name: tcp
  address: 127.0.0.1:9000
LISTENER
- name: web
  address: 127.0.0.1:9001
clusters:
- name: db
  endpoints: [{address: 127.0.0.1:5432}]
plugins:
- {name: l4, file: l4.wasm}
virtual_hosts:
- name: web
  domains: ["*"]
VHOST
  routes:
  - cluster: db
`
	tests := []struct {
		name, listener, vhost string
		want                  []string
	}{
		{name: "valid", listener: `
  tcp_proxy: {cluster: db, filters: [{plugin: l4}], idle_timeout: 10m}`},
		{name: "valid with TLS", listener: `
  tls: {certificates: [{cert_file: a.crt, key_file: a.key}]}
  tcp_proxy: {cluster: db}`},
		{name: "no cluster", listener: `
  tcp_proxy: {filters: [{plugin: l4}]}`, want: []string{"listeners[0].tcp_proxy.cluster: is required"}},
		{name: "unknown cluster and plugin", listener: `
  tcp_proxy: {cluster: nope, filters: [{plugin: l7}]}`, want: []string{
			`listeners[0].tcp_proxy.cluster: unknown cluster "nope"`,
			`listeners[0].tcp_proxy.filters[0].plugin: unknown plugin "l7"`}},
		{name: "native filter", listener: `
  tcp_proxy: {cluster: db, filters: [{native: rate_limit}]}`, want: []string{
			"listeners[0].tcp_proxy.filters[0].native: native filters are HTTP filters"}},
		{name: "HTTP protocols", listener: `
  tcp_proxy: {cluster: db, idle_timeout: -1s}
  http2: {h2c: true}
  http3: {enabled: true}`, want: []string{
			"listeners[0].tcp_proxy.idle_timeout: must not be negative",
			"listeners[0].http2: a TCP listener (tcp_proxy) serves no HTTP/2",
			"listeners[0].http3: a TCP listener (tcp_proxy) serves no HTTP/3"}},
		{name: "virtual host on a TCP listener", listener: `
  tcp_proxy: {cluster: db}`, vhost: `
  listeners: [web, tcp]`, want: []string{
			`virtual_hosts[0].listeners[1]: listener "tcp" carries TCP (tcp_proxy), not HTTP`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := strings.NewReplacer("LISTENER", strings.TrimPrefix(tt.listener, "\n"), "VHOST", strings.TrimPrefix(tt.vhost, "\n")).Replace(base)
			_, err := Parse([]byte(text), "tcp.yaml")
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}
