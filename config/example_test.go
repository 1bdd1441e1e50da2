package config_test

import (
	"fmt"

	"github.com/wasmgate/wasmgate/config"
)

func ExampleParse() {
	doc := `listeners:
- name: main
  address: ":8080"
clusters:
- name: api
  endpoints:
  - address: "10.0.0.1:80"
virtual_hosts:
- name: web
  domains: ["*"]
  routes:
  - cluster: api
    match: {prefix: /api}
  - cluster: api
    match: {path_regex: "^/v(1|2"}
  - clustr: api
`
	// Every problem is reported at once, in line order.
	_, err := config.Parse([]byte(doc), "wasmgate.yaml")
	fmt.Println(err)
	// Output:
	// wasmgate.yaml:15: virtual_hosts[0].routes[1].match.path_regex: missing closing ): `^/v(1|2`
	// wasmgate.yaml:16: virtual_hosts[0].routes[2].clustr: unknown field (did you mean "cluster"?)
}

func ExampleParse_valid() {
	cfg, err := config.Parse([]byte(`{
  "listeners": [{"name": "main", "address": ":8080"}],
  "clusters": [{"name": "api", "endpoints": [{"address": "10.0.0.1:80"}]}],
  "virtual_hosts": [{"name": "web", "domains": ["*"], "routes": [{"cluster": "api"}]}]
}`), "")
	if err != nil {
		panic(err)
	}
	r := cfg.VirtualHosts[0].Routes[0]
	fmt.Println(r.Name, r.Match.Prefix, cfg.Clusters[0].LBPolicy, cfg.Admin.Address)
	// Output:
	// web-0 / round_robin 127.0.0.1:9901
}
