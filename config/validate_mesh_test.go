package config

import (
	"strings"
	"testing"
)

func TestValidateMeshTLS(t *testing.T) {
	tests := []struct {
		name     string
		listener string
		cluster  string
		want     []string
	}{
		{name: "mesh both ways", listener: `
  tls: {mesh: true}`, cluster: `
  tls: {mesh: true, expected_identities: ["spiffe://wasmgate.local/ns/shop/sa/orders"]}`},
		{name: "mesh listener with files", listener: `
  tls:
    mesh: true
    certificates: [{cert_file: a, key_file: a}]
    client_ca_file: ca.pem
    client_auth: optional`, want: []string{
			"listeners[0].tls.certificates: must be empty with mesh: true",
			"listeners[0].tls.client_ca_file: must be empty with mesh: true",
			"listeners[0].tls.client_auth: must be required or empty with mesh: true",
		}},
		{name: "mesh cluster with files", cluster: `
  tls: {mesh: true, ca_file: ca.pem, insecure_skip_verify_i_know_what_i_am_doing: true}`, want: []string{
			"clusters[0].tls: ca_file, cert_file and key_file must be empty with mesh: true",
			"clusters[0].tls.insecure_skip_verify_i_know_what_i_am_doing: cannot be set with mesh: true",
		}},
		{name: "bad identities", cluster: `
  tls:
    mesh: true
    expected_identities: ["https://x/y", "spiffe:///ns/a", "spiffe://Td/ns/a/sa/b", "spiffe://td/"]`, want: []string{
			`clusters[0].tls.expected_identities[0]: "https://x/y" is not a SPIFFE ID`,
			`clusters[0].tls.expected_identities[1]: "spiffe:///ns/a" has no trust domain`,
			`clusters[0].tls.expected_identities[2]: "spiffe://Td/ns/a/sa/b": the trust domain must be lowercase`,
			`clusters[0].tls.expected_identities[3]: "spiffe://td/" has an empty path`,
		}},
		{name: "identities without mesh", cluster: `
  tls: {expected_identities: ["spiffe://td/ns/a/sa/b"]}`, want: []string{"clusters[0].tls.expected_identities: needs mesh: true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := "listeners:\n- name: main\n  address: \":8443\"" + tc.listener +
				"\nclusters:\n- name: api\n  endpoints: [{address: \"10.0.0.1:443\"}]" + tc.cluster +
				"\nvirtual_hosts:\n- name: web\n  domains: [\"*\"]\n  routes:\n  - cluster: api\n"
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
