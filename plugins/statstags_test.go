package plugins_test

import (
	"context"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/plugins/internal/e2e"
	"github.com/wasmgate/wasmgate/proxy/wasm/wasmtest"
)

// statsTagsConfig is a proxy whose features plugin defines a counter named
// by each request's x-count header, with the stats_tags of the proxy-wasm
// Go SDK's metrics example (its envoy.yaml) in place of TAGS.
const statsTagsConfig = `
listeners:
- name: main
  address: 127.0.0.1:0
clusters:
- name: backend
  endpoints: [{address: "{{backend}}"}]
plugins:
- name: features
  file: {{wasm}}
  stats_tags:
TAGS
virtual_hosts:
- name: any
  domains: ["*"]
  filters: [{plugin: features}]
  routes:
  - name: all
    match: {prefix: /}
    cluster: backend
`

// TestStatsTags: a filter that names its metrics as the SDK's metrics
// example does ("custom_header_value_counts_value=foo_reporter=wasmgosdk")
// is exported with the labels the plugin's stats_tags extract, as Envoy's
// stats_tags give custom_header_value_counts{value="foo",reporter=
// "wasmgosdk"}; a configuration that changes the tags names the metrics
// anew, and the old series are no longer exported.
func TestStatsTags(t *testing.T) {
	wasmFile, _ := filepath.Abs("../proxy/wasm/testdata/features.wasm")
	tags := `  - {tag_name: value, regex: '(_value=([a-zA-Z]+))'}
  - {tag_name: reporter, regex: '(_reporter=([a-zA-Z]+))'}
  - {tag_name: mesh.zone, fixed_value: eu-west}`
	p := e2e.Start(t, strings.Replace(statsTagsConfig, "TAGS", tags, 1), map[string]string{"wasm": wasmFile})
	count := func(value string, n int) {
		t.Helper()
		for range n {
			req, _ := http.NewRequest("GET", p.URL+"/", nil)
			req.Header.Set("x-count", "custom_header_value_counts_value="+value+"_reporter=wasmgosdk")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	count("foo", 3)
	count("bar", 5)
	got, err := wasmtest.GatheredMetrics(p.Registry)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"custom_header_value_counts;mesh_zone=eu-west;reporter=wasmgosdk;value=foo": 3,
		"custom_header_value_counts;mesh_zone=eu-west;reporter=wasmgosdk;value=bar": 5,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}

	// New tags: only the value is a label, and the reporter stays in the
	// name. Counting starts again under the new names.
	tags = `  - {tag_name: value, regex: '(_value=([a-zA-Z]+))'}`
	cfg, err := config.Parse([]byte(strings.NewReplacer("TAGS", tags, "{{wasm}}", wasmFile,
		"{{backend}}", strings.TrimPrefix(p.Backend.URL, "http://")).Replace(statsTagsConfig)), "new.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Server.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	count("foo", 2)
	got, err = wasmtest.GatheredMetrics(p.Registry)
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]float64{"custom_header_value_counts_reporter_wasmgosdk;value=foo": 2}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after the change, metrics %v, want %v", got, want)
	}
}
