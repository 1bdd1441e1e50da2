package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fiveMistakes has one mistake of each kind on lines 8 (a misspelt
// field), 9 (a bad duration), 10 (an unknown balancer), 16 (a broken
// regex) and 18 (an unknown cluster).
const fiveMistakes = `listeners:
- name: main
  address: ":8080"
clusters:
- name: api
  endpoints:
  - address: "10.0.0.1:80"
  idle_timout: 5s
  connect_timeout: 5 seconds
  lb_policy: round_robbin
virtual_hosts:
- name: web
  domains: ["*"]
  routes:
  - cluster: api
    match: {path_regex: "^/(a"}
  - match: {prefix: /b}
    cluster: apj
`

func TestEveryErrorAtOnce(t *testing.T) {
	_, err := Parse([]byte(fiveMistakes), "b.yaml")
	want := []string{
		`b.yaml:8: clusters[0].idle_timout: unknown field (did you mean "idle_timeout"?)`,
		`b.yaml:9: clusters[0].connect_timeout: invalid duration "5 seconds" (want a number with a unit: ms, s, m, h)`,
		`b.yaml:10: clusters[0].lb_policy: unknown policy "round_robbin" (want round_robin, least_request, random, ring_hash or maglev)`,
		"b.yaml:16: virtual_hosts[0].routes[0].match.path_regex: missing closing ): `^/(a`",
		`b.yaml:18: virtual_hosts[0].routes[1].cluster: unknown cluster "apj"`,
	}
	if err == nil {
		t.Fatal("Parse accepted five mistakes")
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// TestDecodeErrorsDoNotStopValidation: every kind of decode error leaves
// the rest of the document to be validated, and the validation errors
// that only repeat a decode error are left out.
func TestDecodeErrorsDoNotStopValidation(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"wrong type beside a bad reference", web + "    timeout: [1s]\n  - cluster: nope\n", []string{
			`t.yaml:13: virtual_hosts[0].routes[0].timeout: a duration must be a string such as "5s"`,
			`t.yaml:14: virtual_hosts[0].routes[1].cluster: unknown cluster "nope"`,
		}},
		{"a list where a mapping goes", web + "  - [a, b]\n  - cluster: nope\n", []string{
			`t.yaml:13: virtual_hosts[0].routes[1]: must be a mapping, not a list`,
			`t.yaml:14: virtual_hosts[0].routes[2].cluster: unknown cluster "nope"`,
		}},
		{"items that do not decode keep the others' indices", web + "- name: other\n  domains: [a.com, {b: c}, \"*\"]\n  routes: [{cluster: api}]\n", []string{
			`t.yaml:14: virtual_hosts[1].domains[1]: cannot unmarshal !!map into string`,
			`t.yaml:14: virtual_hosts[1].domains[2]: domain "*" is already served by virtual_hosts[0] on listener "main"`,
		}},
		{"misspelt required field is not also missing", "listeners:\n- name: main\n  adress: \":80\"\n", []string{
			`t.yaml:3: listeners[0].adress: unknown field (did you mean "address"?)`,
		}},
		{"a mapping where a list goes", "listeners: {name: main}\nclusters:\n- name: a\n", []string{
			`t.yaml:1: listeners: must be a list, not a mapping`,
			`t.yaml:3: clusters[0].endpoints: at least one endpoint is required`,
		}},
		{"errors in an aliased mapping are reported once", "listeners:\n- &l {name: main, address: \":80\", idle_timeout: x}\n- *l\n", []string{
			`t.yaml:2: listeners[0].idle_timeout: invalid duration "x" (want a number with a unit: ms, s, m, h)`,
			`t.yaml:2: listeners[1].name: duplicate listener name "main" (first at index 0)`,
			`t.yaml:2: listeners[1].address: address ":80" is already used by listeners[0]`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in), "t.yaml")
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestDecodeDocument(t *testing.T) {
	doc := DecodeDocument([]byte(base+"  idle_timout: 5s\n  lb_policy: [x]\n"), "d.yaml")
	if doc.Config == nil {
		t.Fatal("no Config for a document with field errors")
	}
	if got := doc.Config.Clusters[0].Endpoints[0].Address; got != "10.0.0.1:80" {
		t.Errorf("the fields that decode were not kept: address %q", got)
	}
	if got := doc.Errors.Error(); got != "d.yaml:8: clusters[0].idle_timout: unknown field (did you mean \"idle_timeout\"?)\nd.yaml:9: clusters[0].lb_policy: cannot unmarshal !!seq into string" {
		t.Errorf("Errors:\n%s", got)
	}
	if got := doc.Line("clusters[0].endpoints[0].address"); got != 7 {
		t.Errorf("Line = %d, want 7", got)
	}
	for _, in := range []string{"", "listeners: [", "- a\n", "a: 1\n---\nb: 2\n"} {
		if doc := DecodeDocument([]byte(in), "d.yaml"); doc.Config != nil || len(doc.Errors) != 1 {
			t.Errorf("%q: Config %v, Errors %v; want no Config and one error", in, doc.Config, doc.Errors)
		}
	}
}

func TestDecodeValue(t *testing.T) {
	var cl Cluster
	err := DecodeValue([]byte("name: a\nendpoint: []\nconnect_timeout: soon\n"), "c.yaml", &cl)
	want := "c.yaml:2: endpoint: unknown field (did you mean \"endpoints\"?)\n" +
		`c.yaml:3: connect_timeout: invalid duration "soon" (want a number with a unit: ms, s, m, h)`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want\n%s", err, want)
	}
	if cl.Name != "a" {
		t.Errorf("Name = %q: the fields that decode were not kept", cl.Name)
	}
	if err := DecodeValue([]byte(`{"name": "b", "lb_policy": "random"}`), "", &cl); err != nil || cl.LBPolicy != "random" {
		t.Errorf("JSON: err %v, lb_policy %q", err, cl.LBPolicy)
	}
	if err := DecodeValue([]byte("[1]"), "c.yaml", &cl); err == nil || err.Error() != "c.yaml:1: the document must be a mapping of fields" {
		t.Errorf("a list: %v", err)
	}
}

// writeFile writes a file under dir and returns its path.
func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestValidateFile: what the proxy refuses when it loads the files that a
// configuration names, ValidateFile reports, together with every other
// problem.
func TestValidateFile(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := testKeyPair(t)
	_, otherKey := testKeyPair(t)
	cert := writeFile(t, dir, "cert.pem", certPEM)
	key := writeFile(t, dir, "key.pem", keyPEM)
	other := writeFile(t, dir, "other-key.pem", otherKey)
	module := writeFile(t, dir, "p.wasm", "\x00asm\x01\x00\x00\x00")
	d := sha256.Sum256([]byte("\x00asm\x01\x00\x00\x00"))
	sum := hex.EncodeToString(d[:])
	missing := filepath.Join(dir, "missing")

	listener := func(certFile, keyFile, ca string) string {
		s := "listeners:\n- name: main\n  address: \":8443\"\n  tls:\n    certificates:\n    - cert_file: " + certFile + "\n      key_file: " + keyFile + "\n"
		if ca != "" {
			s += "    client_ca_file: " + ca + "\n"
		}
		return s
	}
	rest := "clusters:\n- name: api\n  endpoints: [{address: \"10.0.0.1:80\"}]\n" +
		"virtual_hosts:\n- name: web\n  domains: [\"*\"]\n  routes: [{cluster: api}]\n"
	plugin := func(file, sha string) string {
		s := "plugins:\n- name: p\n  file: " + file + "\n"
		if sha != "" {
			s += "  sha256: " + sha + "\n"
		}
		return s
	}
	tests := []struct {
		name string
		doc  string
		want []string // each followed by the file's name
	}{
		{"all present", listener(cert, key, cert) + rest + plugin(module, sum), nil},
		{"missing certificate file", listener(missing, key, "") + rest,
			[]string{":6: listeners[0].tls.certificates[0].cert_file: " + missing + ": no such file"}},
		{"missing key file", listener(cert, missing, "") + rest,
			[]string{":7: listeners[0].tls.certificates[0].key_file: " + missing + ": no such file"}},
		{"certificate that does not match its key", listener(cert, other, "") + rest,
			[]string{":6: listeners[0].tls.certificates[0]: cert_file and key_file are not a key pair: private key does not match public key"}},
		{"missing plugin file", listener(cert, key, "") + rest + plugin(missing, ""),
			[]string{":17: plugins[0].file: " + missing + ": no such file"}},
		{"plugin of another digest", listener(cert, key, "") + rest + plugin(module, strings.Repeat("0", 64)),
			[]string{":18: plugins[0].sha256: " + module + " has digest " + sum + ", not this one"}},
		{"CA file without a certificate", listener(cert, key, key) + rest,
			[]string{":8: listeners[0].tls.client_ca_file: " + key + " holds no PEM certificate"}},
		{"a directory for a file", listener(dir, key, "") + rest,
			[]string{":6: listeners[0].tls.certificates[0].cert_file: " + dir + " is not a regular file"}},
		{"file problems with the others", listener(missing, key, "") + "  idle_timout: 1s\n" + rest + plugin(missing, ""), []string{
			":6: listeners[0].tls.certificates[0].cert_file: " + missing + ": no such file",
			":8: listeners[0].idle_timout: unknown field (did you mean \"idle_timeout\"?)",
			":18: plugins[0].file: " + missing + ": no such file",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, t.TempDir(), "c.yaml", tt.doc)
			err := ValidateFile(file)
			var want []string
			for _, w := range tt.want {
				want = append(want, file+w)
			}
			if len(want) == 0 {
				if err != nil {
					t.Fatalf("ValidateFile: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateFile accepted it; want\n%s", strings.Join(want, "\n"))
			}
			var list Errors
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want Errors", err)
			}
			if got := err.Error(); got != strings.Join(want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
			}
			// What the proxy loads at start is not checked by Parse, which
			// reads no files.
			if _, err := Parse([]byte(tt.doc), "c.yaml"); err != nil && !strings.Contains(err.Error(), "unknown field") {
				t.Errorf("Parse: %v", err)
			}
		})
	}
	if err := ValidateFile(missing); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("ValidateFile of a missing file: %v", err)
	}
}
