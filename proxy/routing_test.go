package proxy_test

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
)

// fwd is a route that forwards to cluster and tells the upstream its name
// in x-route.
func fwd(name, match, cluster string) string {
	return fmt.Sprintf("      - {name: %s, match: %s, cluster: %s, request_headers: {set: [{name: x-route, value: %s}]}}\n",
		name, match, cluster, name)
}

func routingConfig() string {
	var b strings.Builder
	b.WriteString(`
admin: {address: "off"}
listeners:
  - {name: main, address: "127.0.0.1:0"}
clusters:
  - {name: a, endpoints: [{address: "{{a}}"}]}
  - {name: b, endpoints: [{address: "{{b}}"}]}
  - {name: c, endpoints: [{address: "{{c}}"}]}
  - {name: d, endpoints: [{address: "{{d}}"}]}
virtual_hosts:
  - name: exact
    domains: [exact.test, Mixed.Case.Test]
    routes:
` + fwd("exact", "{}", "a") + `
  - name: suffix
    domains: ["*.wild.test"]
    routes:
` + fwd("suffix", "{}", "b") + `
  - name: deep
    domains: ["*.deep.wild.test"]
    routes:
` + fwd("deep", "{}", "c") + `
  - name: prefix
    domains: ["api.*"]
    routes:
` + fwd("prefix", "{}", "d") + `
  - name: any
    domains: ["*"]
    routes:
` + fwd("any", "{}", "a") + `
  - name: routes
    domains: [routes.test]
    routes:
`)
	for _, r := range [][3]string{
		{"path-exact", "{path: /exact}", "a"},
		{"path-exact-ci", "{path: /CaseLess, case_insensitive: true}", "a"},
		{"path-regex", `{path_regex: "/items/[0-9]+"}`, "b"},
		{"prefix", "{prefix: /pre/}", "b"},
		{"first", "{prefix: /first/}", "a"},
		{"first-shadowed", "{prefix: /first/x}", "b"},
		{"hdr-exact", "{prefix: /h/, headers: [{name: x-exact, exact: yes}]}", "a"},
		{"hdr-prefix", "{prefix: /h/, headers: [{name: X-Prefix, prefix: abc}]}", "a"},
		{"hdr-regex", `{prefix: /h/, headers: [{name: x-regex, regex: "v[0-9]+"}]}`, "a"},
		{"hdr-present", "{prefix: /h/, headers: [{name: x-present, present: true}]}", "a"},
		{"hdr-absent", "{prefix: /h/absent, headers: [{name: x-block, absent: true}]}", "a"},
		{"hdr-inverted", "{prefix: /inv/, headers: [{name: x-env, exact: prod, invert: true}]}", "c"},
		{"hdr-inverted-fallback", "{prefix: /inv/}", "d"},
		{"query-exact", "{prefix: /q, query: [{name: v, exact: \"2\"}]}", "a"},
		{"query-prefix", "{prefix: /q, query: [{name: lang, prefix: en}]}", "a"},
		{"query-regex", `{prefix: /q, query: [{name: id, regex: "[a-f]+"}]}`, "a"},
		{"query-present", "{prefix: /q, query: [{name: debug, present: true}]}", "a"},
		{"methods", "{prefix: /m, methods: [POST, put]}", "b"},
		{"all", "{headers: [{name: x-all, exact: \"1\"}], query: [{name: all, present: true}], methods: [DELETE], prefix: /all}", "c"},
		{"fallback", "{prefix: /}", "d"},
	} {
		b.WriteString(fwd(r[0], r[1], r[2]))
	}
	return b.String()
}

func startEchoes(t *testing.T, names ...string) (map[string]*testupstream.Server, vars) {
	ups := map[string]*testupstream.Server{}
	v := vars{}
	for _, n := range names {
		ups[n] = testupstream.Start(t, n, nil)
		v[n] = ups[n].Addr()
	}
	return ups, v
}

func TestRouting(t *testing.T) {
	_, v := startEchoes(t, "a", "b", "c", "d")
	e := newEnv(t, routingConfig(), v)

	cases := []struct {
		name     string
		method   string
		host     string
		path     string
		header   []string
		route    string
		instance string
	}{
		// Virtual hosts by Host.
		{name: "exact host", host: "exact.test", path: "/", route: "exact", instance: "a"},
		{name: "exact host with port", host: "exact.test:8080", path: "/", route: "exact"},
		{name: "exact host upper case", host: "EXACT.Test", path: "/", route: "exact"},
		{name: "mixed case domain", host: "mixed.case.test", path: "/", route: "exact"},
		{name: "exact host fully qualified", host: "exact.test.", path: "/", route: "exact"},
		{name: "suffix wildcard", host: "foo.wild.test", path: "/", route: "suffix", instance: "b"},
		{name: "suffix wildcard with port", host: "Foo.Wild.Test:443", path: "/", route: "suffix"},
		{name: "longest suffix wins", host: "x.deep.wild.test", path: "/", route: "deep", instance: "c"},
		{name: "suffix needs a label", host: "wild.test", path: "/", route: "any"},
		{name: "prefix wildcard", host: "api.example.com", path: "/", route: "prefix", instance: "d"},
		{name: "prefix wildcard with port", host: "API.example.org:9000", path: "/", route: "prefix"},
		{name: "any host", host: "unknown.test", path: "/", route: "any", instance: "a"},
		{name: "ip host", host: "127.0.0.1:1234", path: "/", route: "any"},

		// Paths.
		{name: "path exact", host: "routes.test", path: "/exact", route: "path-exact"},
		{name: "path exact is not a prefix", host: "routes.test", path: "/exact/more", route: "fallback"},
		{name: "path exact with query", host: "routes.test", path: "/exact?a=1", route: "path-exact"},
		{name: "path exact case insensitive", host: "routes.test", path: "/caseless", route: "path-exact-ci"},
		{name: "path exact is case sensitive by default", host: "routes.test", path: "/EXACT", route: "fallback"},
		{name: "path regex", host: "routes.test", path: "/items/42", route: "path-regex", instance: "b"},
		{name: "path regex matches the whole path", host: "routes.test", path: "/items/42/x", route: "fallback"},
		{name: "path prefix", host: "routes.test", path: "/pre/a/b", route: "prefix"},
		{name: "path prefix needs its slash", host: "routes.test", path: "/pre", route: "fallback"},
		{name: "first match wins", host: "routes.test", path: "/first/x", route: "first"},

		// Headers.
		{name: "header exact", host: "routes.test", path: "/h/1", header: []string{"X-Exact", "yes"}, route: "hdr-exact"},
		{name: "header exact mismatch", host: "routes.test", path: "/h/1", header: []string{"X-Exact", "yess"}, route: "fallback"},
		{name: "header prefix", host: "routes.test", path: "/h/1", header: []string{"x-prefix", "abcdef"}, route: "hdr-prefix"},
		{name: "header prefix mismatch", host: "routes.test", path: "/h/1", header: []string{"x-prefix", "xabc"}, route: "fallback"},
		{name: "header regex", host: "routes.test", path: "/h/1", header: []string{"X-Regex", "v12"}, route: "hdr-regex"},
		{name: "header regex is anchored", host: "routes.test", path: "/h/1", header: []string{"X-Regex", "v12x"}, route: "fallback"},
		{name: "header present", host: "routes.test", path: "/h/1", header: []string{"X-Present", "anything"}, route: "hdr-present"},
		{name: "header absent", host: "routes.test", path: "/h/absent", route: "hdr-absent"},
		{name: "header absent but present", host: "routes.test", path: "/h/absent", header: []string{"X-Block", "1"}, route: "fallback"},
		{name: "inverted on another value", host: "routes.test", path: "/inv/", header: []string{"X-Env", "dev"}, route: "hdr-inverted", instance: "c"},
		{name: "inverted on a missing header", host: "routes.test", path: "/inv/", route: "hdr-inverted"},
		{name: "inverted on the value", host: "routes.test", path: "/inv/", header: []string{"X-Env", "prod"}, route: "hdr-inverted-fallback", instance: "d"},

		// Query parameters.
		{name: "query exact", host: "routes.test", path: "/q?v=2", route: "query-exact"},
		{name: "query exact mismatch", host: "routes.test", path: "/q?v=20", route: "fallback"},
		{name: "query prefix", host: "routes.test", path: "/q?lang=en-GB", route: "query-prefix"},
		{name: "query regex", host: "routes.test", path: "/q?id=beef", route: "query-regex"},
		{name: "query regex is anchored", host: "routes.test", path: "/q?id=beefy", route: "fallback"},
		{name: "query present", host: "routes.test", path: "/q?x=1&debug", route: "query-present"},
		{name: "query missing", host: "routes.test", path: "/q?x=1", route: "fallback"},

		// Methods.
		{name: "method listed", method: "POST", host: "routes.test", path: "/m", route: "methods"},
		{name: "method listed in lower case", method: "PUT", host: "routes.test", path: "/m", route: "methods"},
		{name: "method not listed", method: "GET", host: "routes.test", path: "/m", route: "fallback"},

		// Every condition must hold.
		{name: "all conditions", method: "DELETE", host: "routes.test", path: "/all?all", header: []string{"X-All", "1"}, route: "all"},
		{name: "all but the method", method: "GET", host: "routes.test", path: "/all?all", header: []string{"X-All", "1"}, route: "fallback"},
		{name: "all but the query", method: "DELETE", host: "routes.test", path: "/all", header: []string{"X-All", "1"}, route: "fallback"},
		{name: "all but the header", method: "DELETE", host: "routes.test", path: "/all?all", route: "fallback"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := e.do(t, request{method: tc.method, host: tc.host, path: tc.path, header: tc.header}).echo(t)
			if r := got.Header.Get("X-Route"); r != tc.route {
				t.Errorf("route %q, want %q", r, tc.route)
			}
			if tc.instance != "" && got.Instance != tc.instance {
				t.Errorf("instance %q, want %q", got.Instance, tc.instance)
			}
			if tc.method != "" && got.Method != tc.method {
				t.Errorf("upstream saw method %q, want %q", got.Method, tc.method)
			}
			// The client may lower the case of Host; names are case-insensitive.
			if wantHost := tc.host; !strings.EqualFold(got.Host, wantHost) {
				t.Errorf("upstream saw Host %q, want %q", got.Host, wantHost)
			}
		})
	}
}

func TestNoRoute(t *testing.T) {
	_, v := startEchoes(t, "a")
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: only
    domains: [only.test]
    routes: [{match: {path: /here}, cluster: a}]
`, v)
	for _, tc := range []struct{ name, host, path string }{
		{"unknown host", "other.test", "/here"},
		{"unknown path", "only.test", "/there"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.get(t, tc.host, tc.path)
			if r.status != http.StatusNotFound || string(r.body) != "route_not_found\n" {
				t.Errorf("got %d %q, want 404 route_not_found", r.status, r.body)
			}
		})
	}
}

func TestWeightedClusters(t *testing.T) {
	_, v := startEchoes(t, "a", "b", "c")
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters:
  - {name: a, endpoints: [{address: "{{a}}"}]}
  - {name: b, endpoints: [{address: "{{b}}"}]}
  - {name: c, endpoints: [{address: "{{c}}"}]}
virtual_hosts:
  - name: split
    domains: ["*"]
    routes:
      - match: {prefix: /}
        weighted_clusters: [{name: a, weight: 70}, {name: b, weight: 30}, {name: c, weight: 0}]
`, v)
	const n = 1000
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		counts[e.get(t, "", "/").echo(t).Instance]++
	}
	if counts["c"] != 0 {
		t.Errorf("a cluster of weight 0 got %d requests", counts["c"])
	}
	// A binomial with p=0.7 over 1000 trials has a standard deviation of
	// about 14.5; allow more than five of them.
	for name, want := range map[string]float64{"a": 0.7 * n, "b": 0.3 * n} {
		if got := float64(counts[name]); math.Abs(got-want) > 75 {
			t.Errorf("cluster %s got %v of %d requests, want about %v (%v)", name, got, n, want, counts)
		}
	}
}

func TestRedirects(t *testing.T) {
	_, v := startEchoes(t, "a")
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: redirects
    domains: ["*"]
    routes:
      - {match: {path: /scheme}, redirect: {scheme: https}}
      - {match: {path: /host}, redirect: {host: other.test}}
      - {match: {path: /port}, redirect: {port: 8443}}
      - {match: {path: /scheme-port}, redirect: {scheme: https, port: 8443}}
      - {match: {path: /path}, redirect: {path: /new/place}}
      - {match: {prefix: /old/}, redirect: {prefix_rewrite: /new/, status: 302}}
      - {match: {path: /strip}, redirect: {path: /stripped, strip_query: true, status: 307}}
      - {match: {path: /permanent}, redirect: {path: /p, status: 308}}
      - {match: {path: /see-other}, redirect: {path: /p, status: 303}}
      - {match: {prefix: /}, cluster: a}
`, v)
	cases := []struct {
		name, host, path string
		status           int
		location         string
	}{
		{"scheme", "site.test", "/scheme", 301, "https://site.test/scheme"},
		{"scheme drops the port", "site.test:8080", "/scheme", 301, "https://site.test/scheme"},
		{"host", "site.test:8080", "/host?q=1", 301, "http://other.test/host?q=1"},
		{"port", "site.test:8080", "/port", 301, "http://site.test:8443/port"},
		{"scheme and port", "site.test", "/scheme-port", 301, "https://site.test:8443/scheme-port"},
		{"path keeps host, port and query", "site.test:8080", "/path?x=1&y=2", 301, "http://site.test:8080/new/place?x=1&y=2"},
		{"prefix rewrite", "site.test", "/old/a/b?x=1", 302, "http://site.test/new/a/b?x=1"},
		{"strip query", "site.test", "/strip?secret=1", 307, "http://site.test/stripped"},
		{"status 308", "site.test", "/permanent", 308, "http://site.test/p"},
		{"status 303", "site.test", "/see-other", 303, "http://site.test/p"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.get(t, tc.host, tc.path)
			if r.status != tc.status {
				t.Errorf("status %d, want %d", r.status, tc.status)
			}
			if loc := r.header.Get("Location"); loc != tc.location {
				t.Errorf("Location %q, want %q", loc, tc.location)
			}
		})
	}
}

func TestDirectResponse(t *testing.T) {
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: []
virtual_hosts:
  - name: direct
    domains: ["*"]
    response_headers:
      set: [{name: x-vhost, value: direct}]
    routes:
      - match: {path: /teapot}
        direct_response:
          status: 418
          body: "short and stout\n"
          headers: [{name: content-type, value: text/plain}, {name: x-teapot, value: "yes"}]
      - match: {path: /empty}
        direct_response: {status: 204}
      - match: {prefix: /}
        direct_response: {status: 200, body: ok}
`, nil)
	cases := []struct {
		name, path string
		status     int
		body       string
		header     map[string]string
	}{
		{"status body and headers", "/teapot", 418, "short and stout\n",
			map[string]string{"Content-Type": "text/plain", "X-Teapot": "yes", "X-Vhost": "direct", "Content-Length": "16"}},
		{"no body", "/empty", 204, "", map[string]string{"X-Vhost": "direct"}},
		{"catch all", "/anything", 200, "ok", map[string]string{"Content-Length": "2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.get(t, "", tc.path)
			if r.status != tc.status || string(r.body) != tc.body {
				t.Errorf("got %d %q, want %d %q", r.status, r.body, tc.status, tc.body)
			}
			for k, want := range tc.header {
				if got := r.header.Get(k); got != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestRewrites(t *testing.T) {
	_, v := startEchoes(t, "a")
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: rewrites
    domains: ["*"]
    routes:
      - {match: {prefix: /api/}, prefix_rewrite: /, cluster: a}
      - {match: {prefix: /v1}, prefix_rewrite: /v2, cluster: a}
      - {match: {prefix: /strip}, prefix_rewrite: "/", cluster: a}
      - match: {path_regex: "/users/[0-9]+/profile"}
        regex_rewrite: {pattern: "^/users/([0-9]+)/profile$", substitution: "/profiles/$1"}
        cluster: a
      - {match: {prefix: /host}, host_rewrite: internal.svc, cluster: a}
      - {match: {prefix: /}, cluster: a}
`, v)
	cases := []struct {
		name, host, path  string
		wantURI, wantHost string
	}{
		{"prefix rewrite to root", "site.test", "/api/users?x=1", "/users?x=1", "site.test"},
		{"prefix rewrite of the whole path", "site.test", "/api/", "/", "site.test"},
		{"prefix rewrite keeps the rest", "site.test", "/v1/items/7", "/v2/items/7", "site.test"},
		{"prefix rewrite without a slash", "site.test", "/strip", "/", "site.test"},
		{"regex rewrite", "site.test", "/users/42/profile?full=1", "/profiles/42?full=1", "site.test"},
		{"host rewrite", "site.test:8080", "/host/x", "/host/x", "internal.svc"},
		{"no rewrite keeps host and path", "site.test:8080", "/plain/%20x?q=a%2Fb", "/plain/%20x?q=a%2Fb", "site.test:8080"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := e.get(t, tc.host, tc.path).echo(t)
			if got.URI != tc.wantURI {
				t.Errorf("upstream saw %q, want %q", got.URI, tc.wantURI)
			}
			if got.Host != tc.wantHost {
				t.Errorf("upstream saw Host %q, want %q", got.Host, tc.wantHost)
			}
		})
	}
}

func TestHeaderMutations(t *testing.T) {
	_, v := startEchoes(t, "a")
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: mut
    domains: ["*"]
    request_headers:
      remove: [x-strip-vh]
      set: [{name: x-both, value: vh}, {name: x-vh-set, value: vh}, {name: X-Client-Set, value: vh}]
      add: [{name: x-added, value: vh}]
    response_headers:
      remove: [x-up-remove]
      set: [{name: x-resp-both, value: vh}, {name: x-resp-vh, value: vh}]
      add: [{name: x-resp-added, value: vh}]
    routes:
      - match: {prefix: /}
        cluster: a
        request_headers:
          remove: [x-strip-route, x-vh-set]
          set: [{name: x-both, value: route}]
          add: [{name: x-added, value: route}]
        response_headers:
          remove: [x-resp-vh]
          set: [{name: x-resp-both, value: route}]
          add: [{name: x-resp-added, value: route}]
`, v)
	r := e.get(t, "", "/?header=X-Up-Remove:1&header=X-Up-Keep:1",
		"X-Strip-Vh", "1", "X-Strip-Route", "1", "X-Client-Set", "client", "X-Keep", "1")
	got := r.echo(t)
	reqWant := map[string][]string{
		"X-Strip-Vh":    nil,
		"X-Strip-Route": nil,
		"X-Vh-Set":      nil, // set by the virtual host, removed by the route
		"X-Both":        {"route"},
		"X-Client-Set":  {"vh"},
		"X-Added":       {"vh", "route"},
		"X-Keep":        {"1"},
	}
	for k, want := range reqWant {
		if g := got.Header.Values(k); !equalStrings(g, want) {
			t.Errorf("upstream saw %s %q, want %q", k, g, want)
		}
	}
	respWant := map[string][]string{
		"X-Up-Remove":  nil,
		"X-Up-Keep":    {"1"},
		"X-Resp-Vh":    nil, // set by the virtual host, removed by the route
		"X-Resp-Both":  {"route"},
		"X-Resp-Added": {"vh", "route"},
	}
	for k, want := range respWant {
		if g := r.header.Values(k); !equalStrings(g, want) {
			t.Errorf("client saw %s %q, want %q", k, g, want)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
