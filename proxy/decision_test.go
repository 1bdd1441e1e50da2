package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// authz is a native authorization filter: it denies a request without
// the header "x-allowed" with 403, and records each decision.
type authz struct{}

func (authz) Name() string                                      { return "authz" }
func (authz) NewStream(*filter.Exchange) (filter.Stream, error) { return authzStream{}, nil }

type authzStream struct{}

func (authzStream) OnRequestHeaders(x *filter.Exchange, _ bool) filter.Status {
	allowed := len(x.Ctx.Request.Header.Peek("x-allowed")) > 0
	d := filter.Decision{Source: "authz", Allowed: allowed, Policy: "need-header", Rule: "0", Reason: "no allow rule matched"}
	if allowed {
		d.Reason = "allowed by policy"
	}
	x.Decide(&d)
	if !allowed {
		x.SendLocalResponse(fasthttp.StatusForbidden, []byte("denied\n"), nil, "authz_denied")
		return filter.Stop
	}
	return filter.Continue
}
func (authzStream) OnRequestBody(*filter.Exchange, *filter.Body, bool) filter.Status {
	return filter.Continue
}
func (authzStream) OnRequestTrailers(*filter.Exchange) filter.Status { return filter.Continue }
func (authzStream) OnResponseHeaders(*filter.Exchange, bool) filter.Status {
	return filter.Continue
}
func (authzStream) OnResponseBody(*filter.Exchange, *filter.Body, bool) filter.Status {
	return filter.Continue
}
func (authzStream) OnResponseTrailers(*filter.Exchange) filter.Status { return filter.Continue }
func (authzStream) OnLog(*filter.Exchange)                            {}
func (authzStream) Done(*filter.Exchange)                             {}

// TestDeniedRequestEmitsDecision sends a request that a native
// authorization filter denies and one it allows: each emits one decision
// record, naming the request id its access record has, the client's
// address, the route's cluster, the policy, rule and verdict.
func TestDeniedRequestEmitsDecision(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go func() { _ = up.Serve(ln) }()
	t.Cleanup(func() { _ = up.Shutdown() })

	var out bytes.Buffer
	telCfg := &config.Telemetry{
		Sinks:  []config.TelemetrySink{{Name: "out", Type: "stdout"}},
		Access: []string{"out"}, Decision: []string{"out"},
	}
	pipe, err := telemetry.New(telCfg, telemetry.WithStdout(&out))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(`
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
plugins: [{name: authz, file: native}]
clusters: [{name: payments, endpoints: [{address: "`+ln.Addr().String()+`"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{name: pay, match: {prefix: /}, cluster: payments, filters: [{plugin: authz}]}]
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Telemetry = telCfg
	s := NewServer(Options{Plugins: nativePlugins{authz{}}, Telemetry: pipe})
	if err := s.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	url := "http://" + s.Addr("main").String() + "/charge"
	for _, allow := range []bool{false, true} {
		req, _ := http.NewRequest("POST", url, nil)
		if allow {
			req.Header.Set("x-allowed", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: 403, true: 200}[allow]; resp.StatusCode != want {
			t.Fatalf("allowed %v: status %d, want %d", allow, resp.StatusCode, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pipe.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	var decisions, access []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		switch r["kind"] {
		case "decision":
			decisions = append(decisions, r)
		case "access":
			access = append(access, r)
		}
	}
	if len(decisions) != 2 || len(access) != 2 {
		t.Fatalf("%d decision and %d access records, want 2 and 2:\n%s", len(decisions), len(access), out.Bytes())
	}
	denied := decisions[0]
	if denied["verdict"] != "deny" || denied["source"] != "authz" || denied["policy"] != "need-header" || denied["destination"] != "payments" ||
		denied["rule"] != "0" || denied["method"] != "POST" || denied["path"] != "/charge" ||
		denied["reason"] != "no allow rule matched" {
		t.Errorf("denied request's decision %v", denied)
	}
	if id := denied["request_id"]; id == nil || id == "" || id != access[0]["request_id"] {
		t.Errorf("decision request id %v, access record's %v", id, access[0]["request_id"])
	}
	if a, _ := denied["source_address"].(string); a == "" {
		t.Errorf("decision has no source address: %v", denied)
	}
	if access[0]["status"] != 403.0 {
		t.Errorf("first access record %v, want the 403", access[0])
	}
	if d := decisions[1]; d["verdict"] != "allow" || d["request_id"] != access[1]["request_id"] {
		t.Errorf("allowed request's decision %v", d)
	}
}
