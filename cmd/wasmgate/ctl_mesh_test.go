package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// TestCtlMeshCheck: policies applied to a running control plane answer
// `ctl mesh check` with the deciding rule, a change to them is seen by the
// next check, and a malformed policy file changes nothing.
func TestCtlMeshCheck(t *testing.T) {
	dir := t.TempDir()
	const token = "a-test-token-of-32-characters-xx"
	p := startProc(t, "controlplane", "--data-dir", filepath.Join(dir, "cp"), "--listen", "127.0.0.1:0",
		"--etcd-listen-client", "127.0.0.1:0", "--etcd-listen-peer", "127.0.0.1:0", "--admin-token", token, "--log-format", "json")
	re := regexp.MustCompile(`(?m)^\{.*"msg":"admin API serving".*"url":"([^"]+)".*\}$`)
	url := p.stderr.wait(t, p, re, 20*time.Second)[1]
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ctl := func(args ...string) (string, int) {
		t.Helper()
		out, err := runCLI(t, append([]string{"ctl", "--server", url, "--token", token}, args...)...)
		var ee *exitError
		switch {
		case err == nil:
			return out, 0
		case errors.As(err, &ee):
			return out + ee.Error(), ee.code
		}
		return out + err.Error(), 1
	}
	if out, code := ctl("apply", "-f", write("base.yaml", `
listeners: [{name: public, address: "127.0.0.1:8080"}]
clusters: [{name: api, endpoints: [{address: "127.0.0.1:9001"}]}]
virtual_hosts: [{name: all, domains: ["*"], routes: [{cluster: api}]}]
`)); code != 0 {
		t.Fatalf("apply base: %s", out)
	}
	policies := write("policies.yaml", `
authorization_policies:
  - name: payments-deny-all
    namespace: payments
  - name: payments-from-orders
    namespace: payments
    service: payments
    action: ALLOW
    rules:
      - from: [{principals: ["spiffe://wasmgate.local/ns/shop/sa/orders"]}]
        to: [{methods: [POST], paths: ["/pay*"]}]
peer_authentications:
  - {name: payments, namespace: payments, mode: STRICT}
outbound_traffic_policies:
  - {name: shop-egress, namespace: shop, mode: ALLOW_ANY}
`)
	if out, code := ctl("mesh", "apply", "-f", policies); code != 0 || !strings.Contains(out, "create  authorization_policies/payments-from-orders") ||
		!strings.Contains(out, "create  authorization_outbound/shop-egress") {
		t.Fatalf("mesh apply: %d %s", code, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"shop/orders", "payments.payments", "POST", "/pay"}, 0, "reason: allowed by policy (authorization_policies/payments-from-orders rules[0])"},
		{[]string{"spiffe://wasmgate.local/ns/shop/sa/orders", "payments/payments", "GET", "/pay"}, 2, "reason: no allow rule matched"},
		{[]string{"web.shop", "payments.payments", "POST", "/pay"}, 2, "DENY  web.shop -> payments.payments  POST /pay"},
		{[]string{"none", "payments.payments", "POST", "/pay"}, 2, "plain text refused"},
		{[]string{"shop/web", "orders.shop"}, 0, "reason: no allow policy applies"},
	} {
		out, code := ctl(append([]string{"mesh", "check"}, tc.args...)...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("mesh check %s: exit %d, want %d with %q:\n%s", strings.Join(tc.args, " "), code, tc.code, tc.want, out)
		}
	}
	out, _ := ctl("-o", "json", "mesh", "check", "shop/orders", "payments.payments", "POST", "/pay")
	var res meshCheck
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Allowed || res.Mode != "strict" || res.ModeSource != "payments" || len(res.Considered) != 2 {
		t.Fatalf("-o json: %+v, %v\n%s", res, err, out)
	}

	if out, code := ctl("get", "authorization_policies"); code != 0 || !regexp.MustCompile(`payments-from-orders\s+\d+\s+payments\s+payments\s+allow\s+1`).MatchString(out) {
		t.Errorf("get authorization_policies: %d\n%s", code, out)
	}
	if out, code := ctl("get", "pa"); code != 0 || !regexp.MustCompile(`payments\s+\d+\s+payments\s+\*\s+strict\s+0`).MatchString(out) {
		t.Errorf("get pa: %d\n%s", code, out)
	}
	if out, code := ctl("get", "outbound_traffic_policies"); code != 0 || !regexp.MustCompile(`shop-egress\s+\d+\s+shop\s+\*\s+allow_any`).MatchString(out) {
		t.Errorf("get outbound_traffic_policies: %d\n%s", code, out)
	}

	// A live change: web may now pay too.
	if out, code := ctl("mesh", "apply", "-f", write("web.yaml", `
authorization_policies:
  - name: payments-from-web
    namespace: payments
    service: payments
    rules: [{from: [{principals: ["wasmgate.local/ns/shop/sa/web"]}]}]
`)); code != 0 {
		t.Fatalf("mesh apply: %s", out)
	}
	if out, code := ctl("mesh", "check", "shop/web", "payments.payments", "POST", "/pay"); code != 0 || !strings.Contains(out, "payments-from-web rules[0]") {
		t.Errorf("after the change: exit %d\n%s", code, out)
	}

	// A service route: applied, and listed with its versions.
	if out, code := ctl("mesh", "apply", "-f", write("route.yaml", `
service_routes:
  - name: orders-canary
    namespace: shop
    service: orders
    rules:
      - match: {headers: [{name: x-canary, exact: "1"}]}
        backends: [{version: v2}]
      - backends: [{version: v1, weight: 90}, {version: v2, weight: 10}]
`)); code != 0 || !strings.Contains(out, "create  attached_routes/orders-canary") {
		t.Fatalf("a service route: exit %d\n%s", code, out)
	}
	if out, code := ctl("get", "sr"); code != 0 || !regexp.MustCompile(`orders-canary\s+\d+\s+shop\s+orders\s+2\s+v2,v1`).MatchString(out) {
		t.Errorf("get service_routes: %d\n%s", code, out)
	}

	// A service entry: applied, and listed with its hosts and ports.
	if out, code := ctl("mesh", "apply", "-f", write("entry.yaml", "service_entries:\n  - {name: payment-apis, namespace: shop, hosts: [api.stripe.com, \"*.paypal.com\"], ports: [443, 8443]}\n")); code != 0 ||
		!strings.Contains(out, "create  attached_entries/payment-apis") {
		t.Fatalf("a service entry: exit %d\n%s", code, out)
	}
	if out, code := ctl("get", "se"); code != 0 || !regexp.MustCompile(`payment-apis\s+\d+\s+shop\s+\*\s+api.stripe.com,\*.paypal.com\s+443,8443`).MatchString(out) {
		t.Errorf("get service_entries: %d\n%s", code, out)
	}

	// A request authentication: applied, and listed with its issuers.
	if out, code := ctl("mesh", "apply", "-f", write("reqauth.yaml", "request_authentications:\n  - {name: shop-users, namespace: shop, jwt_rules: [{issuer: \"https://idp.example\", jwks_uri: \"https://idp.example/jwks\"}]}\n")); code != 0 ||
		!strings.Contains(out, "create  authentication_requests/shop-users") {
		t.Fatalf("a request authentication: exit %d\n%s", code, out)
	}
	if out, code := ctl("get", "ra"); code != 0 || !regexp.MustCompile(`shop-users\s+\d+\s+shop\s+\*\s+https://idp.example`).MatchString(out) {
		t.Errorf("get request_authentications: %d\n%s", code, out)
	}

	// A rate limit policy: applied, and listed with its rates.
	if out, code := ctl("mesh", "apply", "-f", write("limits.yaml", "rate_limit_policies:\n  - {name: orders-limits, namespace: shop, service: orders, identity: {requests_per_second: 100}}\n")); code != 0 ||
		!strings.Contains(out, "create  authorization_ratelimits/orders-limits") {
		t.Fatalf("a rate limit policy: exit %d\n%s", code, out)
	}
	if out, code := ctl("get", "rl"); code != 0 || !regexp.MustCompile(`orders-limits\s+\d+\s+shop\s+orders\s+-\s+100/s\s+0`).MatchString(out) {
		t.Errorf("get rate_limit_policies: %d\n%s", code, out)
	}

	// A Wasm plugin whose module the control plane does not hold is
	// refused, naming the field; pushed, the module makes it valid.
	module := write("tag.wasm", "\x00asm\x01\x00\x00\x00")
	sum := sha256.Sum256([]byte("\x00asm\x01\x00\x00\x00"))
	wasm := write("wasm.yaml", fmt.Sprintf("wasm_plugins:\n  - {name: orders-tag, namespace: shop, service: orders, sha256: %x}\n", sum))
	if out, code := ctl("mesh", "apply", "-f", wasm); code == 0 || !strings.Contains(out, "sha256") || !strings.Contains(out, "push the module first") {
		t.Fatalf("a Wasm plugin of no stored module: exit %d\n%s", code, out)
	}
	if out, code := ctl("plugin", "push", module); code != 0 {
		t.Fatalf("plugin push: %d %s", code, out)
	}
	if out, code := ctl("mesh", "apply", "-f", wasm); code != 0 || !strings.Contains(out, "create  attached_plugins/orders-tag") {
		t.Fatalf("a Wasm plugin: exit %d\n%s", code, out)
	}
	if out, code := ctl("get", "wasm_plugins"); code != 0 || !regexp.MustCompile(`orders-tag\s+\d+\s+shop\s+orders\s+inbound\s+http\s+0\s+`+fmt.Sprintf("%.12x", sum[:6])).MatchString(out) {
		t.Errorf("get wasm_plugins: %d\n%s", code, out)
	}

	// A malformed file is refused with its field path; nothing changes.
	out, code := ctl("mesh", "apply", "-f", write("bad.yaml", `
authorization_policies:
  - name: payments-from-web
    namespace: payments
    rules: [{to: [{paths: ["pay"]}]}]
`))
	if code != 4 || !strings.Contains(out, "authorization_policies[0].rules[0].to[0].paths[0]") {
		t.Fatalf("a malformed file: exit %d\n%s", code, out)
	}
	if out, code := ctl("mesh", "check", "shop/web", "payments.payments", "POST", "/pay"); code != 0 {
		t.Errorf("the refused file changed the policy:\n%s", out)
	}
	// Written around ctl's own check, the control plane refuses it too.
	c := &api.Client{Server: url, Token: token, HTTP: http.DefaultClient}
	_, err := c.Put(context.Background(), resource.Ref{Kind: resource.AuthorizationPolicies, Name: "payments-from-web"},
		[]byte(`{"name":"payments-from-web","namespace":"payments","rules":[{"from":[{"namespaces":["Shop"]}]}]}`), api.Options{})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || len(ae.Body.Errors) != 1 || ae.Body.Errors[0].Path != "rules[0].from[0].namespaces[0]" {
		t.Fatalf("PUT of a malformed policy: %v", err)
	}
}

func TestCtlMeshCheckFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte(`
authorization_policies:
  - name: orders-from-web
    namespace: shop
    service: orders
    rules: [{from: [{principals: ["*/ns/shop/sa/web"]}], when: [{key: "request.headers[x-tenant]", values: [acme]}]}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// No control plane: the server flag points nowhere.
	base := []string{"ctl", "--server", "http://127.0.0.1:1", "mesh", "check", "-f", file}
	out, err := runCLI(t, append(base, "-H", "X-Tenant: acme", "shop/web", "orders.shop", "GET", "/")...)
	if err != nil || !strings.Contains(out, "orders-from-web rules[0]") || !strings.Contains(out, "("+file+")") {
		t.Fatalf("allowed call: %v\n%s", err, out)
	}
	out, err = runCLI(t, append(base, "shop/web", "orders.shop", "GET", "/")...)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(out, "DENY") {
		t.Fatalf("a call without the header: %v\n%s", err, out)
	}
	if _, err := runCLI(t, append(base, "shop/web", "orders")...); err == nil || !strings.Contains(err.Error(), "TO:") {
		t.Fatalf("a bad TO: %v", err)
	}
	if _, err := runCLI(t, append(base, "shop/web", "orders.shop", "GET")...); err == nil {
		t.Fatal("METHOD without PATH was accepted")
	}
	// A connection has no headers: the rule that needs one never allows it.
	out, err = runCLI(t, append(base, "--tcp", "shop/web", "orders.shop")...)
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(out, "no allow rule matched") {
		t.Fatalf("a TCP connection against a rule with a header: %v\n%s", err, out)
	}
	if _, err := runCLI(t, append(base, "--tcp", "-H", "X-Tenant: acme", "shop/web", "orders.shop")...); err == nil {
		t.Fatal("--tcp with a header was accepted")
	}
}

// TestCtlMeshCheckEndUser: --jwt-claims checks a call as if a request
// authentication had verified a token with those claims.
func TestCtlMeshCheckEndUser(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte(`
authorization_policies:
  - name: orders-admins
    namespace: shop
    service: orders
    rules: [{from: [{request_principals: ["https://idp.example/*"]}], when: [{key: "request.auth.claims[groups]", values: [admins]}]}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"ctl", "--server", "http://127.0.0.1:1", "mesh", "check", "-f", file, "shop/web", "orders.shop", "GET", "/admin"}
	out, err := runCLI(t, append(base, "--jwt-claims", `{"iss": "https://idp.example", "sub": "alice", "groups": ["buyers", "admins"]}`)...)
	if err != nil || !strings.Contains(out, "ALLOW") || !strings.Contains(out, "orders-admins rules[0]") {
		t.Fatalf("an admin: %v\n%s", err, out)
	}
	var ee *exitError
	for _, claims := range []string{`{"iss": "https://idp.example", "sub": "bob", "groups": "buyers"}`, ""} {
		args := base
		if claims != "" {
			args = append(args, "--jwt-claims", claims)
		}
		if out, err := runCLI(t, args...); !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(out, "DENY") {
			t.Fatalf("claims %q: %v\n%s", claims, err, out)
		}
	}
	if _, err := runCLI(t, append(base, "--jwt-claims", `{"sub": "alice"}`)...); err == nil || !strings.Contains(err.Error(), "iss and sub") {
		t.Fatalf("claims without an issuer: %v", err)
	}
}
