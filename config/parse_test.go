package config

import (
	"errors"
	"strings"
	"testing"
)

// base is a valid prefix of seven lines: one listener, one cluster. Cases
// that append to it start on line 8.
const base = `listeners:
- name: main
  address: ":8080"
clusters:
- name: api
  endpoints:
  - address: "10.0.0.1:80"
`

// web is a valid virtual host on lines 8 to 12 that cases extend from line 13.
const web = base + `virtual_hosts:
- name: web
  domains: ["*"]
  routes:
  - cluster: api
`

// aliasBomb is a document of about 18n bytes whose aliases, nested three
// deep, expand to n*n*n header matchers.
func aliasBomb(n int) string {
	var b strings.Builder
	b.WriteString("listeners: [{name: main, address: \":80\"}]\n")
	b.WriteString("clusters: [{name: c, endpoints: [{address: \"a:1\"}]}]\n")
	b.WriteString("virtual_hosts:\n- &v\n  name: v\n  domains: [\"*\"]\n  routes:\n  - &rt\n    cluster: c\n    match:\n      headers: [&hm {name: a, present: true}")
	for i := 1; i < n; i++ {
		b.WriteString(", *hm")
	}
	b.WriteString("]\n")
	for i := 1; i < n; i++ {
		b.WriteString("  - *rt\n")
	}
	for i := 1; i < n; i++ {
		b.WriteString("- *v\n")
	}
	return b.String()
}

type wantErr struct {
	path string
	line int
	msg  string
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []wantErr
	}{
		// The document as a whole.
		{"empty", ``, []wantErr{{"", 0, "the document is empty"}}},
		{"only a comment", "# nothing here\n", []wantErr{{"", 0, "the document is empty"}}},
		{"a list", "- listeners\n- clusters\n", []wantErr{{"", 1, "the document must be a mapping of top-level fields (listeners, virtual_hosts, clusters, ...)"}}},
		{"a scalar", "\n\nhello\n", []wantErr{{"", 3, "the document must be a mapping of top-level fields (listeners, virtual_hosts, clusters, ...)"}}},
		{"syntax error", "listeners: [\n", []wantErr{{"", 1, "did not find expected node content"}}},
		{"tab indentation", "listeners:\n\t- name: a\n", []wantErr{{"", 2, "found character that cannot start any token"}}},
		{"second document", base + "---\nclusters: []\n", []wantErr{{"", 8, "a config is one YAML document; found a second"}}},
		{"alias bomb", aliasBomb(200), []wantErr{{"virtual_hosts[1].routes[16].match.headers[7]", 11, "the document expands too many aliases"}}},
		{"no listeners", "clusters: []\n", []wantErr{{"listeners", 0, "at least one listener is required"}}},

		// Unknown fields at every level, with the nearest known name.
		{"unknown top-level", "listener:\n- name: main\n", []wantErr{{"listener", 1, `unknown field (did you mean "listeners"?)`}}},
		{"unknown far from any field", "colour: blue\n" + base, []wantErr{{"colour", 1, "unknown field"}}},
		{"unknown in admin", "admin:\n  adress: :9901\n" + base, []wantErr{{"admin.adress", 2, `unknown field (did you mean "address"?)`}}},
		{"unknown in access_log", "access_log:\n  feilds: [path]\n" + base, []wantErr{{"access_log.feilds", 2, `unknown field (did you mean "fields"?)`}}},
		{"misspelt cluster duration", base + "  idle_timout: 5s\n", []wantErr{{"clusters[0].idle_timout", 8, `unknown field (did you mean "idle_timeout"?)`}}},
		{"unknown in listener field", "listeners:\n- name: main\n  adress: :80\n", []wantErr{{"listeners[0].adress", 3, `unknown field (did you mean "address"?)`}}},
		{"unknown in cluster", base + "  lb_polcy: random\n", []wantErr{{"clusters[0].lb_polcy", 8, `unknown field (did you mean "lb_policy"?)`}}},
		{"unknown in endpoint", base + "    weigth: 3\n", []wantErr{{"clusters[0].endpoints[0].weigth", 8, `unknown field (did you mean "weight"?)`}}},
		{"unknown in hash_policy", base + "  lb_policy: maglev\n  hash_policy: {source-ip: true}\n", []wantErr{{"clusters[0].hash_policy.source-ip", 9, `unknown field (did you mean "source_ip"?)`}}},
		{"unknown in virtual host", web + "  domain: [a]\n", []wantErr{{"virtual_hosts[0].domain", 13, `unknown field (did you mean "domains"?)`}}},
		{"unknown in route", web + "    timout: 1s\n", []wantErr{{"virtual_hosts[0].routes[0].timout", 13, `unknown field (did you mean "timeout"?)`}}},
		{"unknown in match", web + "    match:\n      prefx: /a\n", []wantErr{{"virtual_hosts[0].routes[0].match.prefx", 14, `unknown field (did you mean "prefix"?)`}}},
		{"unknown in header matcher", web + "    match:\n      headers:\n      - name: x\n        exct: y\n", []wantErr{{"virtual_hosts[0].routes[0].match.headers[0].exct", 16, `unknown field (did you mean "exact"?)`}}},
		{"unknown in redirect", web + "  - redirect: {status_code: 302}\n", []wantErr{{"virtual_hosts[0].routes[1].redirect.status_code", 13, "unknown field"}}},
		{"unknown in direct_response", web + "  - direct_response: {status: 200, bdy: hi}\n", []wantErr{{"virtual_hosts[0].routes[1].direct_response.bdy", 13, `unknown field (did you mean "body"?)`}}},
		{"unknown in regex_rewrite", web + "    regex_rewrite: {pattern: a, subsitution: b}\n", []wantErr{{"virtual_hosts[0].routes[0].regex_rewrite.subsitution", 13, `unknown field (did you mean "substitution"?)`}}},
		// What decoded is validated too: without its misspelt weight, the
		// split has none.
		{"unknown in weighted cluster", web + "  - weighted_clusters:\n    - {name: api, wieght: 1}\n", []wantErr{
			{"virtual_hosts[0].routes[1].weighted_clusters", 13, "the weights add up to 0"},
			{"virtual_hosts[0].routes[1].weighted_clusters[0].wieght", 14, `unknown field (did you mean "weight"?)`},
		}},
		{"unknown in header mutation", web + "  request_headers:\n    remve: [x]\n", []wantErr{{"virtual_hosts[0].request_headers.remve", 14, `unknown field (did you mean "remove"?)`}}},
		{"unknown in filter ref", web + "  filters:\n  - plugn: auth\n", []wantErr{{"virtual_hosts[0].filters[0].plugn", 14, `unknown field (did you mean "plugin"?)`}}},
		{"unknown in plugin", base + "plugins:\n- name: auth\n  sha265: abc\n", []wantErr{{"plugins[0].sha265", 10, `unknown field (did you mean "sha256"?)`}}},
		{"unknown in node", "node: {id: a, zone: b}\n" + base, []wantErr{{"node.zone", 1, "unknown field"}}},
		{"unknown fields everywhere at once", "listener: []\nclusters:\n- nme: a\n  endpoints:\n  - adress: x\n", []wantErr{
			{"listener", 1, `unknown field (did you mean "listeners"?)`},
			{"clusters[0].nme", 3, `unknown field (did you mean "name"?)`},
			{"clusters[0].endpoints[0].adress", 5, `unknown field (did you mean "address"?)`},
		}},

		{"unknown in merged mapping", "listeners:\n- name: main\n  <<: {address: \":80\", port: 80}\n", []wantErr{{"listeners[0].port", 3, "unknown field"}}},
		{"listener merged into cluster", "listeners:\n- &l {name: main, address: \":80\"}\nclusters:\n- <<: *l\n  endpoints: [{address: \"a:1\"}]\n", []wantErr{{"clusters[0].address", 2, "unknown field"}}},

		// Wrong types.
		{"string for int", "listeners:\n- name: main\n  address: :80\n  max_request_header_bytes: lots\n", []wantErr{{"listeners[0].max_request_header_bytes", 4, "cannot unmarshal !!str `lots` into int"}}},
		{"string for bool", web + "    match: {case_insensitive: maybe}\n", []wantErr{{"virtual_hosts[0].routes[0].match.case_insensitive", 13, "cannot unmarshal !!str `maybe` into bool"}}},
		{"mapping for string", "listeners:\n- name: {first: main}\n  address: :80\n", []wantErr{{"listeners[0].name", 2, "cannot unmarshal !!map into string"}}},
		{"list for mapping", "admin: [127.0.0.1:9901]\n" + base, []wantErr{{"admin", 1, "must be a mapping, not a list"}}},
		{"mapping for list", "listeners: {name: main, address: \":80\"}\n", []wantErr{{"listeners", 1, "must be a list, not a mapping"}}},
		{"scalar for list", web + "- name: other\n  domains: example.com\n  routes: [{cluster: api}]\n", []wantErr{{"virtual_hosts[1].domains", 14, `must be a list, not the value "example.com"`}}},
		{"scalar for route", web + "  - /api\n", []wantErr{{"virtual_hosts[0].routes[1]", 13, `must be a mapping, not the value "/api"`}}},
		{"list for metadata", "node:\n  metadata: [a, b]\n" + base, []wantErr{{"node.metadata", 2, "cannot unmarshal !!seq into map[string]string"}}},
		{"list in metadata", "node:\n  metadata:\n    zone: a\n    tags: [x]\n" + base, []wantErr{{"node.metadata", 4, "cannot unmarshal !!seq into string"}}},
		{"plugin config with non-string keys", base + "plugins:\n- name: p\n  file: p.wasm\n  config: {1: one}\n", []wantErr{{"plugins[0].config", 11, "plugin configuration cannot be encoded as JSON: json: unsupported type: map[interface {}]interface {}"}}},

		// Durations.
		{"duration without unit", "drain_timeout: 5\n" + base, []wantErr{{"drain_timeout", 1, `invalid duration "5" (want a number with a unit: ms, s, m, h)`}}},
		{"duration in words", base + "  connect_timeout: 10 seconds\n", []wantErr{{"clusters[0].connect_timeout", 8, `invalid duration "10 seconds" (want a number with a unit: ms, s, m, h)`}}},
		{"duration as a list", "listeners:\n- name: main\n  address: :80\n  idle_timeout: [1s]\n", []wantErr{{"listeners[0].idle_timeout", 4, `a duration must be a string such as "5s"`}}},
		{"negative duration", web + "    timeout: -1s\n", []wantErr{{"virtual_hosts[0].routes[0].timeout", 13, "must not be negative"}}},

		// Regular expressions.
		{"bad path_regex", web + "  - cluster: api\n    match: {prefix: /b}\n  - cluster: api\n    match:\n      path_regex: ^/(a\n", []wantErr{{"virtual_hosts[0].routes[2].match.path_regex", 17, "missing closing ): `^/(a`"}}},
		{"bad header regex", web + "    match:\n      headers: [{name: x-v, regex: \"[a\"}]\n", []wantErr{{"virtual_hosts[0].routes[0].match.headers[0].regex", 14, "missing closing ]: `[a`"}}},
		{"bad query regex", web + "    match:\n      query: [{name: v, regex: \"a**\"}]\n", []wantErr{{"virtual_hosts[0].routes[0].match.query[0].regex", 14, "invalid nested repetition operator: `**`"}}},
		{"bad regex_rewrite", web + "    regex_rewrite: {pattern: \"*a\", substitution: x}\n", []wantErr{{"virtual_hosts[0].routes[0].regex_rewrite.pattern", 13, "missing argument to repetition operator: `*`"}}},

		// Names.
		{"duplicate cluster", base + "- name: api\n  endpoints: [{address: \"10.0.0.2:80\"}]\n", []wantErr{{"clusters[1].name", 8, `duplicate cluster name "api" (first at index 0)`}}},
		{"third duplicate names the first", "listeners:\n- {name: a, address: \":1\"}\n- {name: a, address: \":2\"}\n- {name: a, address: \":3\"}\n", []wantErr{
			{"listeners[1].name", 3, `duplicate listener name "a" (first at index 0)`},
			{"listeners[2].name", 4, `duplicate listener name "a" (first at index 0)`},
		}},
		{"duplicate route", web + "    name: r\n  - name: r\n    cluster: api\n", []wantErr{{"virtual_hosts[0].routes[1].name", 14, `duplicate route name "r" (first at index 0)`}}},
		{"invalid name", "listeners:\n- name: -main\n  address: :80\n", []wantErr{{"listeners[0].name", 2, `"-main" is not a valid name (letters, digits, '_', '.', '-'; at most 128; starting with a letter or digit)`}}},
		{"missing virtual host name", base + "virtual_hosts:\n- domains: [\"*\"]\n  routes: [{cluster: api}]\n", []wantErr{{"virtual_hosts[0].name", 9, "is required"}}},

		// References.
		{"unknown cluster", web + "  - cluster: apj\n", []wantErr{{"virtual_hosts[0].routes[1].cluster", 13, `unknown cluster "apj"`}}},
		{"unknown weighted cluster", web + "  - weighted_clusters: [{name: api, weight: 1}, {name: b, weight: 1}]\n", []wantErr{{"virtual_hosts[0].routes[1].weighted_clusters[1].name", 13, `unknown cluster "b"`}}},
		{"unknown listener", web + "  listeners: [main, admin]\n", []wantErr{{"virtual_hosts[0].listeners[1]", 13, `unknown listener "admin"`}}},
		{"unknown plugin", web + "    filters: [{plugin: auth}]\n", []wantErr{{"virtual_hosts[0].routes[0].filters[0].plugin", 13, `unknown plugin "auth"`}}},
		{"filter without plugin", web + "  filters: [{config: x}]\n", []wantErr{{"virtual_hosts[0].filters[0].plugin", 13, "is required"}}},
		{"unknown allowed cluster", base + "plugins:\n- name: p\n  file: p.wasm\n  allowed_clusters: [api, db]\n", []wantErr{{"plugins[0].allowed_clusters[1]", 11, `unknown cluster "db"`}}},

		// Route actions and rewrites.
		{"two actions", web + "    redirect: {host: example.com}\n", []wantErr{{"virtual_hosts[0].routes[0]", 12, "exactly one of cluster, weighted_clusters, redirect and direct_response is required"}}},
		{"no action", web + "  - match: {prefix: /x}\n", []wantErr{{"virtual_hosts[0].routes[1]", 13, "exactly one of cluster, weighted_clusters, redirect and direct_response is required"}}},
		{"prefix_rewrite without match.prefix", web + "    match: {path: /a}\n    prefix_rewrite: /b\n", []wantErr{{"virtual_hosts[0].routes[0].prefix_rewrite", 14, "needs match.prefix"}}},
		{"redirect prefix_rewrite without match.prefix", web + "  - match: {path_regex: ^/a}\n    redirect: {prefix_rewrite: /b}\n", []wantErr{{"virtual_hosts[0].routes[1].redirect.prefix_rewrite", 14, "needs match.prefix"}}},
		{"prefix and regex rewrite", web + "    match: {prefix: /a}\n    prefix_rewrite: /b\n    regex_rewrite: {pattern: a, substitution: b}\n", []wantErr{{"virtual_hosts[0].routes[0]", 12, "at most one of prefix_rewrite and regex_rewrite"}}},
		{"host_rewrite on a redirect", web + "  - redirect: {host: b}\n    host_rewrite: c\n", []wantErr{{"virtual_hosts[0].routes[1]", 13, "prefix_rewrite, regex_rewrite and host_rewrite need a cluster or weighted_clusters action"}}},
		{"two path conditions", web + "    match: {path: /a, prefix: /a}\n", []wantErr{{"virtual_hosts[0].routes[0].match", 13, "at most one of path, prefix and path_regex"}}},
		{"relative prefix", web + "    match: {prefix: api}\n", []wantErr{{"virtual_hosts[0].routes[0].match.prefix", 13, "must start with '/'"}}},
		{"bad method", web + "    match: {methods: [get, \"GET ME\"]}\n", []wantErr{{"virtual_hosts[0].routes[0].match.methods[1]", 13, `"GET ME" is not a method`}}},
		{"header matcher with two conditions", web + "    match: {headers: [{name: a, exact: b, present: true}]}\n", []wantErr{{"virtual_hosts[0].routes[0].match.headers[0]", 13, "exactly one of exact, prefix, regex, present and absent is required"}}},
		{"bad redirect status", web + "  - redirect: {status: 200}\n", []wantErr{{"virtual_hosts[0].routes[1].redirect.status", 13, "must be 301, 302, 303, 307 or 308, not 200"}}},
		{"bad redirect scheme", web + "  - redirect: {scheme: ftp}\n", []wantErr{{"virtual_hosts[0].routes[1].redirect.scheme", 13, "must be http or https"}}},
		{"bad direct_response status", web + "  - direct_response: {status: 700}\n", []wantErr{{"virtual_hosts[0].routes[1].direct_response.status", 13, "must be between 100 and 599"}}},

		// Headers.
		{"bad header name", web + "    request_headers:\n      set: [{name: \"x user\", value: a}]\n", []wantErr{{"virtual_hosts[0].routes[0].request_headers.set[0].name", 14, `"x user" is not a valid header name`}}},
		{"hop-by-hop remove", web + "  response_headers:\n    remove: [Connection]\n", []wantErr{{"virtual_hosts[0].response_headers.remove[0]", 14, `"connection" describes the connection and cannot be changed`}}},
		{"hop-by-hop add", web + "    request_headers:\n      add: [{name: Transfer-Encoding, value: chunked}]\n", []wantErr{{"virtual_hosts[0].routes[0].request_headers.add[0].name", 14, `"transfer-encoding" describes the connection and cannot be changed`}}},
		{"CRLF in header value", web + "    response_headers:\n      add: [{name: x-a, value: \"a\\r\\nset-cookie: b\"}]\n", []wantErr{{"virtual_hosts[0].routes[0].response_headers.add[0].value", 14, "a header value must not contain CR, LF or NUL"}}},
		{"LF in direct_response header", web + "  - direct_response:\n      status: 200\n      headers: [{name: x-a, value: \"a\\nb\"}]\n", []wantErr{{"virtual_hosts[0].routes[1].direct_response.headers[0].value", 15, "a header value must not contain CR, LF or NUL"}}},
		{"CRLF in redirect host", web + "  - redirect: {host: \"a\\r\\nb\"}\n", []wantErr{{"virtual_hosts[0].routes[1].redirect.host", 13, `"a\r\nb" is not a host name`}}},
		{"CRLF in host_rewrite", web + "    host_rewrite: \"a\\r\\nx-b: c\"\n", []wantErr{{"virtual_hosts[0].routes[0].host_rewrite", 13, "must not contain CR, LF or NUL"}}},
		{"bad request_id_header", "listeners:\n- name: main\n  address: :80\n  request_id_header: \"x id\"\n", []wantErr{{"listeners[0].request_id_header", 4, `"x id" is not a valid header name`}}},

		// Domains.
		{"domain conflict", web + "- name: other\n  domains: [Example.com, \"*\"]\n  routes: [{cluster: api}]\n", []wantErr{{"virtual_hosts[1].domains[1]", 14, `domain "*" is already served by virtual_hosts[0] on listener "main"`}}},
		{"domain conflict case-insensitive", base + "virtual_hosts:\n- name: a\n  domains: [example.com]\n  routes: [{cluster: api}]\n- name: b\n  domains: [EXAMPLE.com]\n  routes: [{cluster: api}]\n", []wantErr{{"virtual_hosts[1].domains[0]", 13, `domain "example.com" is already served by virtual_hosts[0] on listener "main"`}}},
		{"wildcard in the middle", web + "- name: other\n  domains: [\"a.*.com\"]\n  routes: [{cluster: api}]\n", []wantErr{{"virtual_hosts[1].domains[0]", 14, `"a.*.com": a wildcard must be the first or the last character`}}},
		{"two wildcards", web + "- name: other\n  domains: [\"*.a.*\"]\n  routes: [{cluster: api}]\n", []wantErr{{"virtual_hosts[1].domains[0]", 14, `"*.a.*" has more than one wildcard`}}},
		{"domain with a path", web + "- name: other\n  domains: [example.com/a, \"\"]\n  routes: [{cluster: api}]\n", []wantErr{
			{"virtual_hosts[1].domains[0]", 14, `"example.com/a" is not a domain name`},
			{"virtual_hosts[1].domains[1]", 14, "must not be empty"},
		}},
		{"no domains or routes", base + "virtual_hosts:\n- name: web\n", []wantErr{
			{"virtual_hosts[0].domains", 9, `at least one domain is required ("*" for any)`},
			{"virtual_hosts[0].routes", 9, "at least one route is required"},
		}},

		// Clusters.
		{"endpoint weight too big", base + "    weight: 20000\n", []wantErr{{"clusters[0].endpoints[0].weight", 8, "must be between 1 and 10000, not 20000"}}},
		{"negative endpoint weight", base + "    weight: -1\n", []wantErr{{"clusters[0].endpoints[0].weight", 8, "must be between 1 and 10000, not -1"}}},
		{"weights add up to 0", web + "  - weighted_clusters: [{name: api, weight: 0}]\n", []wantErr{{"virtual_hosts[0].routes[1].weighted_clusters", 13, "the weights add up to 0"}}},
		{"negative split weight", web + "  - weighted_clusters:\n    - {name: api, weight: 2}\n    - {name: api, weight: -1}\n", []wantErr{{"virtual_hosts[0].routes[1].weighted_clusters[1].weight", 15, "must be between 0 and 1000000"}}},
		{"hash_policy on round_robin", base + "  hash_policy: {header: x-user}\n", []wantErr{{"clusters[0].hash_policy", 8, "is only used by ring_hash and maglev, not round_robin"}}},
		{"hash_policy with two keys", base + "  lb_policy: ring_hash\n  hash_policy: {header: x-user, cookie: s}\n", []wantErr{{"clusters[0].hash_policy", 9, "exactly one of header, cookie and source_ip is required"}}},
		{"bad lb_policy", base + "  lb_policy: roundrobin\n", []wantErr{{"clusters[0].lb_policy", 8, `unknown policy "roundrobin" (want round_robin, least_request, random, ring_hash or maglev)`}}},
		{"no endpoints", "listeners: [{name: main, address: \":80\"}]\nclusters:\n- name: api\n", []wantErr{{"clusters[0].endpoints", 3, "at least one endpoint is required"}}},
		{"bad discovery", base + "  discovery: dns\n", []wantErr{{"clusters[0].discovery", 8, `unknown discovery "dns" (want static or registry)`}}},
		{"duplicate endpoint", base + "  - address: \"10.0.0.1:80\"\n  - address: \"10.0.0.1:80\"\n", []wantErr{
			{"clusters[0].endpoints[1].address", 8, `duplicate endpoint "10.0.0.1:80" (first at index 0)`},
			{"clusters[0].endpoints[2].address", 9, `duplicate endpoint "10.0.0.1:80" (first at index 0)`},
		}},

		// Listeners.
		{"bad trusted_proxies", "listeners:\n- name: main\n  address: :80\n  trusted_proxies:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n  - proxy.local\n", []wantErr{
			{"listeners[0].trusted_proxies[1]", 6, `"10.0.0.0/33" is not an IP address or CIDR`},
			{"listeners[0].trusted_proxies[2]", 7, `"proxy.local" is not an IP address or CIDR`},
		}},
		{"address without port", "listeners:\n- name: main\n  address: \"8080\"\n", []wantErr{{"listeners[0].address", 3, `"8080" is not host:port`}}},
		{"port out of range", "listeners:\n- name: main\n  address: \":70000\"\n", []wantErr{{"listeners[0].address", 3, `":70000" has an invalid port`}}},
		{"shared address", "listeners:\n- {name: a, address: \":80\"}\n- {name: b, address: \":80\"}\n", []wantErr{{"listeners[1].address", 3, `address ":80" is already used by listeners[0]`}}},
		{"unknown access log field", "access_log:\n  fields: [path, latency]\n" + base, []wantErr{{"access_log.fields[1]", 2, `unknown access log field "latency" (or request_header.NAME, response_header.NAME, filter_state.KEY)`}}},

		// Plugins.
		{"plugin without module", base + "plugins:\n- name: p\n", []wantErr{{"plugins[0]", 9, "one of file and sha256 is required"}}},
		{"plugin bad fields", base + "plugins:\n- name: p\n  sha256: abc\n  failure_policy: ignore\n  memory_limit_mb: 5000\n", []wantErr{
			{"plugins[0].sha256", 10, "must be 64 lowercase hex digits"},
			{"plugins[0].failure_policy", 11, `unknown policy "ignore" (want fail_closed, fail_open or reload)`},
			{"plugins[0].memory_limit_mb", 12, "must be between 1 and 4096"},
		}},

		{"plugin bad stats_tags", base + "plugins:\n- name: p\n  file: p.wasm\n  stats_tags:\n  - {tag_name: value, regex: '(_value=(['}\n  - {tag_name: plugin, fixed_value: x}\n  - {tag_name: code, regex: 'code'}\n  - {tag_name: value, regex: '(a)', fixed_value: b}\n  - {regex: '(a)'}\n", []wantErr{
			{"plugins[0].stats_tags[0].regex", 12, "missing closing ]: `[`"},
			{"plugins[0].stats_tags[1].tag_name", 13, `"plugin" is not a label name this proxy can export (letters, digits, '_', '.', '-', not starting with a digit or "__", and not "plugin")`},
			{"plugins[0].stats_tags[2].regex", 14, "needs a capture group: the first is cut from the metric's name, the second (or the first) is the value"},
			{"plugins[0].stats_tags[3].tag_name", 15, `"value" names the same label as stats_tags[0]`},
			{"plugins[0].stats_tags[3]", 15, "exactly one of regex and fixed_value is required"},
			{"plugins[0].stats_tags[4].tag_name", 16, "is required"},
		}},

		{"plugins sharing a vm_id disagree", base + "plugins:\n- {name: a, file: m.wasm, vm_id: v, root_id: a}\n- {name: b, file: n.wasm, vm_id: v, pool_size: 2}\n- {name: c, file: n.wasm, vm_id: w}\n", []wantErr{
			{"plugins[1].file", 10, `differs from plugins[0] (a), which shares vm_id "v": plugins in one VM must agree on it`},
			{"plugins[1].pool_size", 10, `differs from plugins[0] (a), which shares vm_id "v": plugins in one VM must agree on it`},
		}},

		// JSON input.
		{"JSON unknown field", `{
  "listeners": [
    {"name": "main", "address": ":8080"}
  ],
  "clusters": [
    {"name": "api", "lb_policy": "random",
     "endpoints": [{"address": "10.0.0.1:80", "wieght": 2}]}
  ]
}`, []wantErr{{"clusters[0].endpoints[0].wieght", 7, `unknown field (did you mean "weight"?)`}}},
		{"JSON wrong type", `{"listeners": [{"name": "main", "address": ":8080",
  "max_request_body_bytes": "1MB"}]}`, []wantErr{{"listeners[0].max_request_body_bytes", 2, "cannot unmarshal !!str `1MB` into int64"}}},
		{"JSON validation error", `{"listeners": [{"name": "main", "address": ":8080"}],
 "virtual_hosts": [{"name": "web", "domains": ["*"],
   "routes": [{"cluster": "nope"}]}]}`, []wantErr{{"virtual_hosts[0].routes[0].cluster", 3, `unknown cluster "nope"`}}},
		{"JSON with tabs", "{\n\t\"listeners\": [\n\t\t{\"name\": \"main\", \"address\": \":8080\", \"port\": 80}\n\t]\n}\n", []wantErr{{"listeners[0].port", 3, "unknown field"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.in), "test.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want errors", cfg)
			}
			if cfg != nil {
				t.Errorf("Parse returned a config with an error")
			}
			var list Errors
			if !errors.As(err, &list) {
				t.Fatalf("error is %T (%v), want Errors", err, err)
			}
			var got []wantErr
			for _, fe := range list {
				if fe.File != "test.yaml" {
					t.Errorf("%s: File = %q, want test.yaml", fe.Path, fe.File)
				}
				got = append(got, wantErr{fe.Path, fe.Line, fe.Msg})
			}
			if !equalErrs(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", fmtErrs(got), fmtErrs(tt.want))
			}
		})
	}
}

func equalErrs(a, b []wantErr) bool {
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

func fmtErrs(es []wantErr) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString("\t")
		b.WriteString((&FieldError{Line: e.line, Path: e.path, Msg: e.msg}).Error())
		b.WriteString("\n")
	}
	return b.String()
}

func TestFieldErrorString(t *testing.T) {
	tests := []struct {
		e    FieldError
		want string
	}{
		{FieldError{File: "a.yaml", Line: 3, Path: "x.y", Msg: "bad"}, "a.yaml:3: x.y: bad"},
		{FieldError{File: "a.yaml", Path: "x", Msg: "bad"}, "a.yaml: x: bad"},
		{FieldError{Line: 3, Path: "x", Msg: "bad"}, "line 3: x: bad"},
		{FieldError{Msg: "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	es := Errors{{Path: "a", Msg: "x"}, {Path: "b", Msg: "y"}}
	if got, want := es.Error(), "a: x\nb: y"; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
}
