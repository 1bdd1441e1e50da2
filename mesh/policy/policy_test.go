package policy_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// headers is a header lookup over a fixed list, for tests.
type headers map[string]string

func (h headers) Get(name string) (string, bool) {
	v, ok := h[strings.ToLower(name)]
	return v, ok
}

const td = "wasmgate.local"

func id(ns, sa string) string { return policy.SPIFFEID(td, ns, sa) }

func mustCompile(t testing.TB, doc string) *policy.Set {
	t.Helper()
	d, err := policy.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	s, err := policy.Compile(d.AuthorizationPolicies)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

// The demo's policy: web may call orders, orders may call payments, web
// may not call payments; payments denies DELETE from anyone; everything in
// payments is audited for /admin.
const demo = `
authorization_policies:
  - name: payments-deny-all
    namespace: payments
  - name: orders-from-web
    namespace: shop
    service: orders
    action: ALLOW
    rules:
      - from: [{principals: ["spiffe://wasmgate.local/ns/shop/sa/web"]}]
        to: [{methods: [GET, POST], paths: ["/orders*"]}]
  - name: payments-from-orders
    namespace: payments
    service: payments
    rules:
      - from: [{principals: ["wasmgate.local/ns/shop/sa/orders"]}]
        to: [{paths: ["/pay", "/refund/*"]}]
      - from: [{namespaces: ["ops-*"]}]
        when:
          - key: request.headers[x-ticket]
            values: ["OPS-*"]
  - name: payments-no-delete
    namespace: payments
    action: deny
    rules:
      - to: [{methods: [DELETE]}]
  - name: payments-audit-admin
    namespace: payments
    action: AUDIT
    rules:
      - to: [{paths: ["/admin/*"]}]
  - name: mesh-deny-plaintext-admin
    namespace: wasmgate-system
    action: DENY
    rules:
      - from: [{not_principals: ["*"]}]
        to: [{paths: ["/admin*"]}]
`

func TestEvaluateIstioSemantics(t *testing.T) {
	set := mustCompile(t, demo)
	orders := set.For("shop", "orders")
	payments := set.For("payments", "payments")
	ledger := set.For("payments", "ledger")
	web := set.For("shop", "web")
	for _, tc := range []struct {
		name    string
		table   *policy.Table
		req     policy.Request
		allowed bool
		reason  policy.Reason
		by      string
		rule    int
		audit   string
	}{
		{"web calls orders", orders, policy.Request{Principal: id("shop", "web"), Method: "GET", Path: "/orders/7?x=1"}, true, policy.AllowMatched, "orders-from-web", 0, ""},
		{"web posts to orders", orders, policy.Request{Principal: id("shop", "web"), Method: "POST", Path: "/orders"}, true, policy.AllowMatched, "orders-from-web", 0, ""},
		{"web deletes on orders: method not allowed", orders, policy.Request{Principal: id("shop", "web"), Method: "DELETE", Path: "/orders/7"}, false, policy.NoAllowMatched, "", -1, ""},
		{"payments calls orders: principal not allowed", orders, policy.Request{Principal: id("payments", "payments"), Method: "GET", Path: "/orders"}, false, policy.NoAllowMatched, "", -1, ""},
		{"plain text to orders", orders, policy.Request{Method: "GET", Path: "/orders"}, false, policy.NoAllowMatched, "", -1, ""},
		{"orders pays", payments, policy.Request{Principal: id("shop", "orders"), Method: "POST", Path: "/pay"}, true, policy.AllowMatched, "payments-from-orders", 0, ""},
		{"orders refunds", payments, policy.Request{Principal: id("shop", "orders"), Method: "POST", Path: "/refund/12"}, true, policy.AllowMatched, "payments-from-orders", 0, ""},
		{"web pays directly", payments, policy.Request{Principal: id("shop", "web"), Method: "POST", Path: "/pay"}, false, policy.NoAllowMatched, "", -1, ""},
		{"orders deletes: deny wins over allow", payments, policy.Request{Principal: id("shop", "orders"), Method: "DELETE", Path: "/pay"}, false, policy.DenyMatched, "payments-no-delete", 0, ""},
		{"ops with a ticket", payments, policy.Request{Principal: id("ops-eu", "oncall"), Method: "GET", Path: "/admin/x", Headers: headers{"x-ticket": "OPS-12"}}, true, policy.AllowMatched, "payments-from-orders", 1, "payments-audit-admin"},
		{"ops without a ticket", payments, policy.Request{Principal: id("ops-eu", "oncall"), Method: "GET", Path: "/pay"}, false, policy.NoAllowMatched, "", -1, ""},
		{"ops with a wrong ticket", payments, policy.Request{Principal: id("ops-eu", "oncall"), Method: "GET", Path: "/pay", Headers: headers{"x-ticket": "DEV-1"}}, false, policy.NoAllowMatched, "", -1, ""},
		{"namespace deny-all covers another service", ledger, policy.Request{Principal: id("shop", "orders"), Method: "POST", Path: "/pay"}, false, policy.NoAllowMatched, "", -1, ""},
		{"plain text to admin: mesh-wide deny first", ledger, policy.Request{Method: "GET", Path: "/admin"}, false, policy.DenyMatched, "mesh-deny-plaintext-admin", 0, ""},
		{"no allow policy applies", web, policy.Request{Principal: id("x", "y"), Method: "GET", Path: "/"}, true, policy.NoPolicy, "", -1, ""},
		{"mesh-wide deny applies everywhere", web, policy.Request{Method: "GET", Path: "/admin/users"}, false, policy.DenyMatched, "mesh-deny-plaintext-admin", 0, ""},
		{"audit does not decide", ledger, policy.Request{Principal: id("shop", "orders"), Method: "GET", Path: "/admin/x"}, false, policy.NoAllowMatched, "", -1, "payments-audit-admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.table.Evaluate(&tc.req)
			if d.Allowed != tc.allowed || d.Reason != tc.reason || d.Policy != tc.by || d.Rule != tc.rule || d.AuditPolicy != tc.audit {
				t.Fatalf("got %s (%+v), want allowed=%v reason=%q policy=%q rule=%d audit=%q", d, d, tc.allowed, tc.reason, tc.by, tc.rule, tc.audit)
			}
		})
	}
}

func TestRuleParts(t *testing.T) {
	set := mustCompile(t, `
authorization_policies:
  - name: p
    namespace: ns
    rules:
      - to: [{hosts: ["api.example.com", "*.internal"], not_paths: ["/private*"]}]
      - from: [{ip_blocks: ["10.1.0.0/16"], not_ip_blocks: ["10.1.2.3"]}]
      - to: [{ports: [8443]}]
        when: [{key: destination.port, values: ["8443"]}, {key: source.namespace, not_values: ["blocked"]}]
      - when: [{key: source.principal, values: ["*/sa/robot"]}]
      - to: [{methods: ["*"], paths: ["*.json"]}]
`)
	tab := set.For("ns", "svc")
	ip := netip.MustParseAddr
	for _, tc := range []struct {
		name string
		req  policy.Request
		rule int
	}{
		{"host exact, any case, with a port", policy.Request{Host: "API.example.com:8080", Path: "/"}, 0},
		{"host suffix", policy.Request{Host: "db.internal", Path: "/x"}, 0},
		{"host but a not_path", policy.Request{Host: "db.internal", Path: "/private/x"}, -1},
		{"ip block", policy.Request{SourceIP: ip("10.1.9.9"), Path: "/"}, 1},
		{"ip block, mapped v4", policy.Request{SourceIP: ip("::ffff:10.1.9.9"), Path: "/"}, 1},
		{"ip excluded", policy.Request{SourceIP: ip("10.1.2.3"), Path: "/"}, -1},
		{"port and conditions", policy.Request{Port: 8443, Principal: id("a", "b"), Path: "/"}, 2},
		{"port but blocked namespace", policy.Request{Port: 8443, Principal: id("blocked", "b"), Path: "/"}, -1},
		{"principal suffix", policy.Request{Principal: id("any", "robot"), Path: "/"}, 3},
		{"path suffix, any method", policy.Request{Method: "PATCH", Path: "/a/b.json"}, 4},
		{"star needs a value", policy.Request{Path: "/a/b.json"}, -1},
		{"nothing", policy.Request{Method: "GET", Path: "/"}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tab.Evaluate(&tc.req)
			if d.Rule != tc.rule || d.Allowed != (tc.rule >= 0) {
				t.Fatalf("got %s, want rule %d", d, tc.rule)
			}
		})
	}
}

func TestRulesEdgeCases(t *testing.T) {
	set := mustCompile(t, `
authorization_policies:
  - {name: allow-all, namespace: open, rules: [{}]}
  - {name: deny-nothing, namespace: open, action: deny}
  - {name: deny-all, namespace: closed, action: deny, rules: [{}]}
  - {name: allow-all-too, namespace: closed, rules: [{}]}
`)
	if d := set.For("open", "x").Evaluate(&policy.Request{}); !d.Allowed || d.Policy != "allow-all" {
		t.Errorf("a rule with no parts should allow everything: %s", d)
	}
	if d := set.For("closed", "x").Evaluate(&policy.Request{Principal: id("a", "b")}); d.Allowed || d.Policy != "deny-all" {
		t.Errorf("a deny rule with no parts should deny everything: %s", d)
	}
}

func TestValidationNamesFieldPaths(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		paths     []string
	}{
		{"missing scope", `authorization_policies: [{rules: [{}]}]`, []string{"authorization_policies[0].name", "authorization_policies[0].namespace"}},
		{"bad action", `authorization_policies: [{name: a, namespace: n, action: reject}]`, []string{"authorization_policies[0].action"}},
		{"bad principal", `authorization_policies: [{name: a, namespace: n, rules: [{from: [{principals: ["spiffe://td/ns/x"]}]}]}]`, []string{"authorization_policies[0].rules[0].from[0].principals[0]"}},
		{"star in the middle", `authorization_policies: [{name: a, namespace: n, rules: [{to: [{paths: ["/a/*/b"]}]}]}]`, []string{"authorization_policies[0].rules[0].to[0].paths[0]"}},
		{"path without slash", `authorization_policies: [{name: a, namespace: n, rules: [{to: [{paths: ["x"]}]}]}]`, []string{"authorization_policies[0].rules[0].to[0].paths[0]"}},
		{"lower-case method", `authorization_policies: [{name: a, namespace: n, rules: [{to: [{methods: ["get"]}]}]}]`, []string{"authorization_policies[0].rules[0].to[0].methods[0]"}},
		{"bad port", `authorization_policies: [{name: a, namespace: n, rules: [{to: [{not_ports: [0]}]}]}]`, []string{"authorization_policies[0].rules[0].to[0].not_ports[0]"}},
		{"bad ip block", `authorization_policies: [{name: a, namespace: n, rules: [{from: [{ip_blocks: ["10.0.0.0/33"]}]}]}]`, []string{"authorization_policies[0].rules[0].from[0].ip_blocks[0]"}},
		{"empty source", `authorization_policies: [{name: a, namespace: n, rules: [{from: [{}]}]}]`, []string{"authorization_policies[0].rules[0].from[0]"}},
		{"bad condition key", `authorization_policies: [{name: a, namespace: n, rules: [{when: [{key: "connection.sni", values: [x]}]}]}]`, []string{"authorization_policies[0].rules[0].when[0].key"}},
		{"condition without values", `authorization_policies: [{name: a, namespace: n, rules: [{when: [{key: "request.headers[x]"}]}]}]`, []string{"authorization_policies[0].rules[0].when[0]"}},
		{"bad header name", `authorization_policies: [{name: a, namespace: n, rules: [{when: [{key: "request.headers[a b]", values: [x]}]}]}]`, []string{"authorization_policies[0].rules[0].when[0].key"}},
		{"service in root", `authorization_policies: [{name: a, namespace: wasmgate-system, service: s}]`, []string{"authorization_policies[0].service"}},
		{"duplicate", `authorization_policies: [{name: a, namespace: n}, {name: a, namespace: m}]`, []string{"authorization_policies[1].name"}},
		{"peer mode", `peer_authentications: [{name: a, namespace: n, mode: disable}]`, []string{"peer_authentications[0].mode"}},
		{"peer ports need a service", `peer_authentications: [{name: a, namespace: n, port_level: {8080: permissive}}]`, []string{"peer_authentications[0].port_level"}},
		{"peer port", `peer_authentications: [{name: a, namespace: n, service: s, port_level: {70000: strict}}]`, []string{"peer_authentications[0].port_level[70000]"}},
		{"outbound mode", `outbound_traffic_policies: [{name: a, namespace: n, mode: deny}]`, []string{"outbound_traffic_policies[0].mode"}},
		{"outbound mode missing", `outbound_traffic_policies: [{name: a, namespace: n}]`, []string{"outbound_traffic_policies[0].mode"}},
		{"outbound duplicate", `outbound_traffic_policies: [{name: a, namespace: n, mode: allow_any}, {name: a, namespace: m, mode: allow_any}]`, []string{"outbound_traffic_policies[1].name"}},
		{"wasm without module", `wasm_plugins: [{name: a, namespace: n}]`, []string{"wasm_plugins[0].sha256"}},
		{"wasm mode", `wasm_plugins: [{name: a, namespace: n, mode: sideways, sha256: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]`, []string{"wasm_plugins[0].mode"}},
		{"wasm type", `wasm_plugins: [{name: a, namespace: n, type: udp, sha256: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]`, []string{"wasm_plugins[0].type"}},
		{"wasm failure policy", `wasm_plugins: [{name: a, namespace: n, sha256: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", failure_policy: retry}]`, []string{"wasm_plugins[0].failure_policy"}},
		{"route without service", `service_routes: [{name: a, namespace: n, rules: [{backends: [{version: v1}]}]}]`, []string{"service_routes[0].service"}},
		{"route without rules", `service_routes: [{name: a, namespace: n, service: s}]`, []string{"service_routes[0].rules"}},
		{"route rule", `service_routes: [{name: a, namespace: n, service: s, rules: [{match: {prefix: api, headers: [{name: x-canary}]}, backends: [{version: V2, weight: 0}, {version: V2}], retries: {attempts: 0, on: [always]}}]}]`,
			[]string{"service_routes[0].rules[0].match.prefix", "service_routes[0].rules[0].match.headers[0]", "service_routes[0].rules[0].backends[0].version",
				"service_routes[0].rules[0].backends[1].version", "service_routes[0].rules[0].backends[1].version", "service_routes[0].rules[0].backends", "service_routes[0].rules[0].retries.attempts", "service_routes[0].rules[0].retries.on[0]"}},
		{"route traffic policy", `service_routes: [{name: a, namespace: n, service: s, traffic_policy: {load_balancer: ring_hash, outlier_detection: {max_ejection_percent: 200}, connection_pool: {max_requests: -1}}}]`,
			[]string{"service_routes[0].traffic_policy.hash_policy", "service_routes[0].traffic_policy.outlier_detection", "service_routes[0].traffic_policy.outlier_detection.max_ejection_percent",
				"service_routes[0].traffic_policy.connection_pool.max_requests"}},
		{"route fault", `service_routes: [{name: a, namespace: n, service: s, rules: [{backends: [{}], fault: {}}, {backends: [{}], fault: {abort: {status: 99, percent: 10}}}]}]`,
			[]string{"service_routes[0].rules[0].fault", "service_routes[0].rules[1].fault.abort.status"}},
		{"route rewrite and mirror", `service_routes: [{name: a, namespace: n, service: s, rules: [{backends: [{}], rewrite: {}, mirror: {version: ""}}, {backends: [{}], rewrite: {uri: "v2/", authority: "a b"}, mirror: {version: v2, percent: 120}}]}]`,
			[]string{"service_routes[0].rules[0].rewrite", "service_routes[0].rules[0].mirror.version", "service_routes[0].rules[1].rewrite.uri", "service_routes[0].rules[1].rewrite.authority", "service_routes[0].rules[1].mirror.percent"}},
		{"request authentication", `request_authentications: [{name: a, namespace: n, jwt_rules: [{issuer: i, jwks: "{}", from_headers: [{name: "bad header"}], from_params: ["a=b"], audiences: [""]}, {issuer: i, jwks_uri: "ftp://x"}, {issuer: j}]}]`,
			[]string{"request_authentications[0].jwt_rules[0].jwks", "request_authentications[0].jwt_rules[0].from_headers[0].name", "request_authentications[0].jwt_rules[0].from_params[0]",
				"request_authentications[0].jwt_rules[0].audiences[0]", "request_authentications[0].jwt_rules[1].issuer", "request_authentications[0].jwt_rules[1].jwks_uri", "request_authentications[0].jwt_rules[2]"}},
		{"request authentication claim headers", `request_authentications: [{name: a, namespace: n, jwt_rules: [{issuer: i, jwks_uri: "https://i/jwks", output_claim_to_headers: [{header: Host, claim: sub}, {header: x-user}]}]}]`,
			[]string{"request_authentications[0].jwt_rules[0].output_claim_to_headers[0].header", "request_authentications[0].jwt_rules[0].output_claim_to_headers[1].claim"}},
		{"request authentication cookies and payload", `request_authentications: [{name: a, namespace: n, jwt_rules: [{issuer: i, jwks_uri: "https://i/jwks", from_cookies: [session, "a b", ""], output_payload_to_header: Authorization}]}]`,
			[]string{"request_authentications[0].jwt_rules[0].from_cookies[1]", "request_authentications[0].jwt_rules[0].from_cookies[2]", "request_authentications[0].jwt_rules[0].output_payload_to_header"}},
		{"request authentication without rules", `request_authentications: [{name: a, namespace: n}]`, []string{"request_authentications[0].jwt_rules"}},
		{"request principals and claims", `authorization_policies: [{name: a, namespace: n, rules: [{from: [{request_principals: ["a*b"]}], when: [{key: "request.auth.claims[]", values: [x]}]}]}]`,
			[]string{"authorization_policies[0].rules[0].from[0].request_principals[0]", "authorization_policies[0].rules[0].when[0].key"}},
		{"route retries of statuses", `service_routes: [{name: a, namespace: n, service: s, rules: [{backends: [{}], retries: {attempts: 2, status_codes: [409, 200]}}]}]`,
			[]string{"service_routes[0].rules[0].retries.status_codes[1]"}},
		{"route match of a pattern, methods and a query", `service_routes: [{name: a, namespace: n, service: s, rules: [{backends: [{}], match: {prefix: /a, path_regex: "(", methods: ["GET ME"], query_params: [{name: q}, {name: "", exact: x}]}}]}]`,
			[]string{"service_routes[0].rules[0].match", "service_routes[0].rules[0].match.query_params[0]", "service_routes[0].rules[0].match.query_params[1].name",
				"service_routes[0].rules[0].match.path_regex", "service_routes[0].rules[0].match.methods[0]"}},
		{"route redirect, headers and subsets", `service_routes: [{name: a, namespace: n, service: s, rules: [{backends: [{}], redirect: {status: 200}, headers: {request: {set: [{name: "bad name", value: x}]}, response: {remove: [connection]}}}, {redirect: {prefix_rewrite: /x}, timeout: 1s}], subsets: [{version: v1}, {version: v1, traffic_policy: {load_balancer: fastest}}]}]`,
			[]string{"service_routes[0].rules[0]", "service_routes[0].rules[0].redirect.status", "service_routes[0].rules[0].headers.request.set[0].name", "service_routes[0].rules[0].headers.response.remove[0]",
				"service_routes[0].rules[1].redirect", "service_routes[0].rules[1].redirect.prefix_rewrite", "service_routes[0].subsets[0].traffic_policy", "service_routes[0].subsets[1].version", "service_routes[0].subsets[1].traffic_policy.load_balancer"}},
		{"entry", `service_entries: [{name: a, namespace: n, hosts: [api.example.com, "*.ok.test", "bad host", "*"], ports: [0, 443]}]`,
			[]string{"service_entries[0].hosts[2]", "service_entries[0].hosts[3]", "service_entries[0].ports[0]"}},
		{"entry tls origination", `service_entries: [{name: a, namespace: n, addresses: [10.0.0.1], ports: [443], tls_origination: {target_port: 70000, ca_certificates: "no pem"}}]`,
			[]string{"service_entries[0].tls_origination", "service_entries[0].tls_origination.target_port", "service_entries[0].tls_origination.port", "service_entries[0].tls_origination.ca_certificates"}},
		{"entry tls origination mutual without its files", `service_entries: [{name: a, namespace: n, hosts: [x.test], tls_origination: {mode: mutual, certificate_file: client.pem}}]`,
			[]string{"service_entries[0].tls_origination.certificate_file", "service_entries[0].tls_origination.private_key_file"}},
		{"entry tls origination files without mutual", `service_entries: [{name: a, namespace: n, hosts: [x.test], tls_origination: {mode: workload, private_key_file: /k.pem}}]`,
			[]string{"service_entries[0].tls_origination.private_key_file"}},
		{"entry tls origination unknown mode", `service_entries: [{name: a, namespace: n, hosts: [x.test], tls_origination: {mode: istio_mutual}}]`,
			[]string{"service_entries[0].tls_origination.mode"}},
		{"rate limit", `rate_limit_policies: [{name: a, namespace: n, service: s, total: {requests_per_second: 0}, overrides: [{requests_per_second: 5, principals: [spiffe://td/ns/n, "*"]}, {requests_per_second: 2000000, principals: []}]}]`,
			[]string{"rate_limit_policies[0].total.requests_per_second", "rate_limit_policies[0].overrides[0].principals[0]", "rate_limit_policies[0].overrides[0].principals[1]",
				"rate_limit_policies[0].overrides[1].requests_per_second", "rate_limit_policies[0].overrides[1].principals"}},
		{"rate limit without limits", `rate_limit_policies: [{name: a, namespace: n}]`, []string{"rate_limit_policies[0].service", "rate_limit_policies[0].total"}},
		{"entry without hosts", `service_entries: [{name: a, namespace: n}]`, []string{"service_entries[0].hosts"}},
		{"route in the root namespace", `service_routes: [{name: a, namespace: wasmgate-system, service: s, rules: [{backends: [{}]}]}]`, []string{"service_routes[0].service", "service_routes[0].namespace"}},
		{"unknown field", `authorization_policies: [{name: a, namespace: n, selector: {}}]`, nil},
		{"istio camel case", `authorization_policies: [{name: a, namespace: n, rules: [{from: [{notPrincipals: [x]}]}]}]`, nil},
		{"bad json", `{"authorization_policies": 3}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy.Parse([]byte(tc.doc))
			var list config.Errors
			if !errors.As(err, &list) {
				t.Fatalf("Parse = %v, want config.Errors", err)
			}
			var got []string
			for _, fe := range list {
				got = append(got, fe.Path)
			}
			if tc.paths == nil {
				if len(list) == 0 || list[0].Msg == "" {
					t.Fatalf("want a decoding error, got %v", err)
				}
				return
			}
			if strings.Join(got, ",") != strings.Join(tc.paths, ",") {
				t.Fatalf("paths = %q, want %q (%v)", got, tc.paths, err)
			}
		})
	}
}

func TestPeerAuthenticationModes(t *testing.T) {
	d, err := policy.Parse([]byte(`
peer_authentications:
  - {name: mesh, namespace: wasmgate-system, mode: PERMISSIVE}
  - {name: shop, namespace: shop, mode: STRICT}
  - {name: legacy, namespace: shop, service: legacy, mode: permissive, port_level: {9090: strict}}
  - {name: metrics-port, namespace: shop, service: orders, port_level: {9102: permissive}}
`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := policy.CompileModes(d.PeerAuthentications)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ns, svc string
		port    int
		want    policy.Resolution
	}{
		{"shop", "orders", 8080, policy.Resolution{Mode: policy.Strict, Source: "shop"}},
		{"shop", "orders", 9102, policy.Resolution{Mode: policy.Permissive, Source: "metrics-port"}},
		{"shop", "legacy", 8080, policy.Resolution{Mode: policy.Permissive, Source: "legacy"}},
		{"shop", "legacy", 9090, policy.Resolution{Mode: policy.Strict, Source: "legacy"}},
		{"other", "x", 80, policy.Resolution{Mode: policy.Permissive, Source: "mesh"}},
	} {
		if got := m.For(tc.ns, tc.svc, tc.port); got != tc.want {
			t.Errorf("For(%s, %s, %d) = %+v, want %+v", tc.ns, tc.svc, tc.port, got, tc.want)
		}
	}
	empty, _ := policy.CompileModes(nil)
	if got := empty.For("a", "b", 1); got.Mode != policy.Strict {
		t.Errorf("default mode = %+v, want strict", got)
	}
}

func TestOutboundTrafficPolicies(t *testing.T) {
	d, err := policy.Parse([]byte(`
outbound_traffic_policies:
  - {name: mesh, namespace: wasmgate-system, mode: REGISTRY_ONLY}
  - {name: shop, namespace: shop, mode: ALLOW_ANY}
  - {name: vault, namespace: shop, service: vault, mode: registry_only}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ns, svc string
		want    policy.OutboundResolution
	}{
		{"shop", "orders", policy.OutboundResolution{Mode: policy.AllowAny, Source: "shop"}},
		{"shop", "vault", policy.OutboundResolution{Mode: policy.RegistryOnly, Source: "vault"}},
		{"other", "x", policy.OutboundResolution{Mode: policy.RegistryOnly, Source: "mesh"}},
	} {
		if got, ok := policy.OutboundFor(d.OutboundTrafficPolicies, tc.ns, tc.svc); !ok || got != tc.want {
			t.Errorf("OutboundFor(%s, %s) = %+v %v, want %+v", tc.ns, tc.svc, got, ok, tc.want)
		}
	}
	if _, ok := policy.OutboundFor(d.OutboundTrafficPolicies[1:], "other", "x"); ok {
		t.Error("a service no policy covers has a mode")
	}
}

func TestWasmPluginsOfAService(t *testing.T) {
	sha := strings.Repeat("a", 64)
	d, err := policy.Parse([]byte(`
wasm_plugins:
  - {name: mesh-stats, namespace: wasmgate-system, mode: CLIENT, sha256: ` + sha + `}
  - {name: shop-waf, namespace: shop, priority: 10, sha256: ` + sha + `}
  - {name: orders-auth, namespace: shop, service: orders, mode: SERVER, priority: 20, sha256: ` + sha + `, config: {issuer: x}}
  - {name: orders-zz, namespace: shop, service: orders, sha256: ` + sha + `}
  - {name: other, namespace: shop, service: payments, sha256: ` + sha + `}
  - {name: elsewhere, namespace: bank, sha256: ` + sha + `}
  - {name: orders-lines, namespace: shop, service: orders, type: NETWORK, sha256: ` + sha + `}
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range policy.WasmFor(d.WasmPlugins, "shop", "orders") {
		got = append(got, string(p.Mode)+":"+string(p.Type)+":"+p.PluginName())
	}
	want := "inbound:http:mesh.orders-auth inbound:http:mesh.shop-waf inbound:network:mesh.orders-lines inbound:http:mesh.orders-zz outbound:http:mesh.mesh-stats"
	if strings.Join(got, " ") != want {
		t.Fatalf("WasmFor = %q, want %q", got, want)
	}
}

func TestParseSPIFFE(t *testing.T) {
	for _, tc := range []struct {
		in         string
		ok         bool
		td, ns, sa string
	}{
		{"spiffe://wasmgate.local/ns/shop/sa/web", true, "wasmgate.local", "shop", "web"},
		{"spiffe://td/ns/a/sa/b/c", false, "", "", ""},
		{"spiffe:///ns/a/sa/b", false, "", "", ""},
		{"spiffe://td/ns//sa/b", false, "", "", ""},
		{"spiffe://td/ns/a/sa/", false, "", "", ""},
		{"https://td/ns/a/sa/b", false, "", "", ""},
		{"", false, "", "", ""},
	} {
		td, ns, sa, ok := policy.ParseSPIFFE(tc.in)
		if ok != tc.ok || td != tc.td || ns != tc.ns || sa != tc.sa {
			t.Errorf("ParseSPIFFE(%q) = %q %q %q %v", tc.in, td, ns, sa, ok)
		}
	}
}

func TestDecisionString(t *testing.T) {
	set := mustCompile(t, demo)
	d := set.For("payments", "payments").Evaluate(&policy.Request{Principal: id("shop", "orders"), Method: "DELETE", Path: "/admin/x"})
	want := "deny: denied by policy payments-no-delete rules[0] (audited by payments-audit-admin rules[0])"
	if d.String() != want {
		t.Fatalf("String() = %q, want %q", d.String(), want)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	tab := mustCompile(b, demo).For("payments", "payments")
	req := &policy.Request{Principal: id("ops-eu", "oncall"), Method: "GET", Path: "/admin/x?y=1", Headers: headers{"x-ticket": "OPS-12"}, SourceIP: netip.MustParseAddr("10.0.0.1"), Port: 8080}
	b.ReportAllocs()
	for b.Loop() {
		if d := tab.Evaluate(req); !d.Allowed {
			b.Fatal(d)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(demo))
	f.Add([]byte(`{"authorization_policies":[{"name":"a","namespace":"n","rules":[{"to":[{"paths":["*.x"]}]}]}]}`))
	f.Add([]byte(`peer_authentications: [{name: a, namespace: n, service: s, port_level: {80: strict}}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := policy.Parse(data)
		if err != nil {
			return
		}
		set, err := policy.Compile(doc.AuthorizationPolicies)
		if err != nil {
			t.Fatalf("a parsed document does not compile: %v", err)
		}
		if _, err := policy.CompileModes(doc.PeerAuthentications); err != nil {
			t.Fatalf("a parsed document's modes do not compile: %v", err)
		}
		// The parsed form, written as JSON, reads back the same.
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatalf("a parsed document does not encode: %v", err)
		}
		again, err := policy.Parse(b)
		if err != nil {
			t.Fatalf("an encoded document does not parse: %v\n%s", err, b)
		}
		// Compared as JSON: empty and absent lists are one to JSON.
		if b2, _ := json.Marshal(again); string(b) != string(b2) {
			t.Fatalf("the round trip changed the document:\n%s\n%s", b, b2)
		}
		for _, p := range doc.AuthorizationPolicies {
			tab := set.For(p.Namespace, p.Service)
			tab.Evaluate(&policy.Request{Principal: id(p.Namespace, "x"), Method: "GET", Path: "/a?b", Host: "h:1", Headers: headers{}})
			tab.Evaluate(&policy.Request{})
		}
	})
}

// TestDocExamples parses every authorization policy document in
// docs/mesh-policy.md, and every policy document of docs/migrating.md.
func TestDocExamples(t *testing.T) {
	for _, doc := range []struct {
		file     string
		prefixes []string
		least    int
	}{
		{"../../docs/mesh-policy.md", []string{"authorization_policies:"}, 2},
		{"../../docs/migrating.md", []string{"authorization_policies:", "service_routes:"}, 3},
	} {
		b, err := os.ReadFile(doc.file)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, block := range strings.Split(string(b), "```yaml\n")[1:] {
			block, _, _ = strings.Cut(block, "```")
			for strings.HasPrefix(block, "#") { // a comment naming the example
				_, block, _ = strings.Cut(block, "\n")
			}
			if !slices.ContainsFunc(doc.prefixes, func(p string) bool { return strings.HasPrefix(block, p) }) {
				continue
			}
			n++
			d, err := policy.Parse([]byte(block))
			if err != nil {
				t.Errorf("%s: an example does not parse: %v\n%s", doc.file, err, block)
				continue
			}
			if _, err := policy.Compile(d.AuthorizationPolicies); err != nil {
				t.Errorf("%s: an example does not compile: %v", doc.file, err)
			}
		}
		if n < doc.least {
			t.Fatalf("found %d policy examples in %s", n, doc.file)
		}
	}
}

// TestConnections: a TCP connection has no HTTP attributes. As in Istio,
// an ALLOW or AUDIT rule that names one never matches it; a DENY rule
// matches it without them (it fails closed); rules of identities, IP
// blocks and ports apply as to requests.
func TestConnections(t *testing.T) {
	set := mustCompile(t, `
authorization_policies:
  - name: db-callers
    namespace: shop
    service: db
    rules:
      - from: [{principals: ["spiffe://wasmgate.local/ns/shop/sa/web"]}]
      - from: [{principals: ["spiffe://wasmgate.local/ns/shop/sa/orders"]}]
        to: [{methods: [GET]}]
      - from: [{namespaces: [ops]}]
        to: [{ports: [5432]}]
  - name: db-no-batch
    namespace: shop
    service: db
    action: deny
    rules:
      - from: [{principals: ["spiffe://wasmgate.local/ns/shop/sa/batch"]}]
        to: [{paths: ["/admin"]}]
      - from: [{principals: ["spiffe://wasmgate.local/ns/shop/sa/cron"]}]
        when: [{key: "request.headers[x-job]", values: [nightly]}]
  - name: db-audit
    namespace: shop
    service: db
    action: audit
    rules:
      - to: [{methods: ["*"]}]
`)
	db := set.For("shop", "db")
	conn := func(principal string, port int) *policy.Request {
		return &policy.Request{Principal: principal, Port: port, Connection: true, SourceIP: netip.MustParseAddr("10.0.0.9")}
	}
	for _, tc := range []struct {
		name    string
		req     *policy.Request
		allowed bool
		reason  policy.Reason
		by      string
		rule    int
	}{
		{"an allowed identity", conn(id("shop", "web"), 5432), true, policy.AllowMatched, "db-callers", 0},
		{"a rule with methods never allows a connection", conn(id("shop", "orders"), 5432), false, policy.NoAllowMatched, "", -1},
		{"the same rule allows an HTTP request", &policy.Request{Principal: id("shop", "orders"), Method: "GET", Path: "/"}, true, policy.AllowMatched, "db-callers", 1},
		{"ports are layer 4", conn(id("ops", "oncall"), 5432), true, policy.AllowMatched, "db-callers", 2},
		{"another port", conn(id("ops", "oncall"), 5433), false, policy.NoAllowMatched, "", -1},
		{"a deny with paths matches without them", conn(id("shop", "batch"), 5432), false, policy.DenyMatched, "db-no-batch", 0},
		{"a deny with a header condition matches without it", conn(id("shop", "cron"), 5432), false, policy.DenyMatched, "db-no-batch", 1},
		{"the deny's HTTP request without the path passes it", &policy.Request{Principal: id("shop", "batch"), Method: "GET", Path: "/x"}, false, policy.NoAllowMatched, "", -1},
		{"plain text", conn("", 5432), false, policy.NoAllowMatched, "", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := db.Evaluate(tc.req)
			if d.Allowed != tc.allowed || d.Reason != tc.reason || d.Policy != tc.by || d.Rule != tc.rule {
				t.Fatalf("got %s (%+v), want allowed=%v reason=%q policy=%q rule=%d", d, d, tc.allowed, tc.reason, tc.by, tc.rule)
			}
			if tc.req.Connection && d.AuditPolicy != "" {
				t.Fatalf("an audit rule of methods matched a connection: %s", d)
			}
		})
	}
}

func TestServiceEntryAdmits(t *testing.T) {
	e := policy.ServiceEntry{Name: "apis", Namespace: "shop", Hosts: []string{"API.example.com.", "*.payments.test"}, Ports: []int{443}}
	e.Normalize()
	for _, tc := range []struct {
		host string
		port int
		want bool
	}{
		{"api.example.com", 443, true}, {"Api.Example.Com", 0, true}, {"api.example.com", 80, false},
		{"eu.payments.test", 443, true}, {"payments.test", 443, false}, {"example.com", 443, false},
	} {
		if got := e.Admits(tc.host, tc.port); got != tc.want {
			t.Errorf("Admits(%q, %d) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}
	db := policy.ServiceEntry{Name: "db", Namespace: "shop", Addresses: []string{"10.20.0.0/16", "192.0.2.7"}}
	for host, want := range map[string]bool{"10.20.3.4": true, "10.21.0.1": false, "192.0.2.7": true, "[::1]": false} {
		if got := db.Admits(host, 5432); got != want {
			t.Errorf("Admits(%q) = %v, want %v", host, got, want)
		}
	}
	if err := (&policy.ServiceEntry{Name: "x", Namespace: "shop", Addresses: []string{"10.0.0.0/33"}}).Validate(); err == nil || !strings.Contains(err.Error(), "addresses[0]") {
		t.Errorf("a bad CIDR: %v", err)
	}
	if got := policy.EntriesFor([]policy.ServiceEntry{e, {Name: "other", Namespace: "bank", Hosts: []string{"x.test"}}}, "shop", "web"); len(got) != 1 || got[0].Name != "apis" {
		t.Errorf("EntriesFor = %+v", got)
	}
}

// TestServiceEntryOriginates: an entry that originates TLS sends a plain
// call to one of its hosts on its port to the host's target port; a call
// on another port, to an address, or to another host is not its.
func TestServiceEntryOriginates(t *testing.T) {
	e := policy.ServiceEntry{Name: "apis", Namespace: "shop", Hosts: []string{"api.example.com", "*.ok.test"}, Addresses: []string{"10.0.0.1"},
		TLSOrigination: &policy.TLSOrigination{TargetPort: 8443, CACertificates: "roots"}}
	if err := e.Validate(); err == nil {
		t.Fatal("roots that are no PEM were accepted")
	}
	for _, tc := range []struct {
		host   string
		port   int
		target string
	}{
		{"api.example.com", 80, "api.example.com:8443"},
		{"x.ok.test", 80, "x.ok.test:8443"},
		{"api.example.com", 8080, ""},
		{"10.0.0.1", 80, ""},
		{"other.test", 80, ""},
	} {
		target, o, ok := e.Originates(tc.host, tc.port)
		if target != tc.target || ok != (tc.target != "") || ok && o.CACertificates != "roots" {
			t.Errorf("Originates(%s, %d) = %q %+v %v, want %q", tc.host, tc.port, target, o, ok, tc.target)
		}
	}
}
