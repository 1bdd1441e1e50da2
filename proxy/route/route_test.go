package route_test

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/route"
)

func compile(t *testing.T, yaml string) *route.Table {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), "route.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cs := map[string]*cluster.Cluster{}
	ps := cluster.NewPools()
	for _, cc := range cfg.Clusters {
		c, err := cluster.Build(cc, nil, ps)
		if err != nil {
			t.Fatal(err)
		}
		cs[cc.Name] = c
	}
	tbl, err := route.Compile(cfg, cfg.Listeners[0].Name, route.Deps{Clusters: cs, Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// wire is the request as it would be written upstream.
func wire(t *testing.T, req *fasthttp.Request) string {
	t.Helper()
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := req.Write(w); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	return b.String()
}

func TestRewriteRequestOnTheWire(t *testing.T) {
	tbl := compile(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "127.0.0.1:1"}]}]
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - {match: {prefix: /api/}, prefix_rewrite: /, host_rewrite: internal.svc, cluster: a}
      - {match: {prefix: /h}, host_rewrite: other.svc:8080, cluster: a}
      - {match: {path_regex: "/u/[0-9]+"}, regex_rewrite: {pattern: "^/u/([0-9]+)$", substitution: "/users/$1"}, cluster: a}
      - {match: {prefix: /}, cluster: a}
`)
	cases := []struct {
		name, uri, host    string
		wantLine, wantHost string
	}{
		{"prefix and host", "/api/x?q=1", "site.test", "GET /x?q=1 HTTP/1.1", "internal.svc"},
		{"host with port", "/h", "site.test:8080", "GET /h HTTP/1.1", "other.svc:8080"},
		{"regex", "/u/7", "site.test", "GET /users/7 HTTP/1.1", "site.test"},
		{"none", "/a/b", "site.test", "GET /a/b HTTP/1.1", "site.test"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var req fasthttp.Request
			req.SetRequestURI(tc.uri)
			req.Header.SetHost(tc.host)
			vh := tbl.Find(req.Header.Host())
			r := vh.Match(&req)
			if r == nil {
				t.Fatal("no route")
			}
			r.RewriteRequest(&req, nil)
			got := wire(t, &req)
			if line, _, _ := strings.Cut(got, "\r\n"); line != tc.wantLine {
				t.Errorf("request line %q, want %q", line, tc.wantLine)
			}
			if !strings.Contains(got, "\r\nHost: "+tc.wantHost+"\r\n") {
				t.Errorf("want Host %q in\n%s", tc.wantHost, got)
			}
		})
	}
}

func TestMutationOrder(t *testing.T) {
	tbl := compile(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "127.0.0.1:1"}]}]
virtual_hosts:
  - name: v
    domains: ["*"]
    request_headers:
      remove: [x-client]
      set: [{name: x-a, value: vh}, {name: x-b, value: vh}]
      add: [{name: x-c, value: vh}]
    response_headers:
      set: [{name: x-a, value: vh}, {name: x-b, value: vh}]
    routes:
      - match: {prefix: /}
        cluster: a
        request_headers:
          remove: [x-b]
          set: [{name: x-client, value: route}]
          add: [{name: x-c, value: route}]
        response_headers:
          remove: [x-b]
          set: [{name: x-a, value: route}]
`)
	var req fasthttp.Request
	req.SetRequestURI("/")
	req.Header.Set("X-Client", "client")
	r := tbl.Find([]byte("x")).Match(&req)
	h, ok := r.Filters[len(r.Filters)-1].(*native.Headers)
	if !ok {
		t.Fatalf("the last filter is %s, want headers", r.Filters[len(r.Filters)-1].Name())
	}
	h.Request.ApplyRequest(&req.Header)
	want := map[string]string{"X-A": "vh", "X-B": "", "X-C": "vh,route", "X-Client": "route"}
	for k, v := range want {
		var got []string
		for _, b := range req.Header.PeekAll(k) {
			got = append(got, string(b))
		}
		if strings.Join(got, ",") != v {
			t.Errorf("request %s: %q, want %q", k, got, v)
		}
	}

	var resp fasthttp.Response
	h.Response.ApplyResponse(&resp.Header)
	for k, v := range map[string]string{"X-A": "route", "X-B": ""} {
		if got := string(resp.Header.Peek(k)); got != v {
			t.Errorf("response %s: %q, want %q", k, got, v)
		}
	}
}
