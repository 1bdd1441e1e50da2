package wasm

import (
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// TestMetricLabels defines guest metrics with labels in their names and
// checks what a scrape shows, including names that cannot be labels.
func TestMetricLabels(t *testing.T) {
	s := newMetricStore()
	cases := []struct {
		name           string
		fq             string
		labels, values []string
	}{
		{"http.requests;route=api;status=200", "wasm_http_requests", []string{"route", "status"}, []string{"api", "200"}},
		{"http.requests;route=web;status=404", "wasm_http_requests", []string{"route", "status"}, []string{"web", "404"}},
		// Other keys under the same name would make the family inconsistent.
		{"http.requests;route=web", "wasm_http_requests_route_web", nil, nil},
		{"plain.counter", "wasm_plain_counter", nil, nil},
		{"bad;nokey", "wasm_bad_nokey", nil, nil},
		{"bad2;plugin=x", "wasm_bad2_plugin_x", nil, nil},
		{"dup;a=1;a=2", "wasm_dup_a_1_a_2", nil, nil},
		{"keys;my-key=v", "wasm_keys", []string{"my_key"}, []string{"v"}},
		// Envoy's (Istio's) tag-extraction convention.
		{"istio_requests_total.reporter=.=destination;.;response_code=.=200;.;", "wasm_istio_requests_total",
			[]string{"reporter", "response_code"}, []string{"destination", "200"}},
		{"istio_requests_total.reporter=.=source;.;response_code=.=503;.;", "wasm_istio_requests_total",
			[]string{"reporter", "response_code"}, []string{"source", "503"}},
	}
	for _, tc := range cases {
		m := s.get(s.define("p", abi.MetricCounter, tc.name, nil))
		if m.fqName != tc.fq || !reflect.DeepEqual(m.labels, tc.labels) || !reflect.DeepEqual(m.values, tc.values) {
			t.Errorf("%q: got %s %v %v, want %s %v %v", tc.name, m.fqName, m.labels, m.values, tc.fq, tc.labels, tc.values)
		}
		m.value.Add(1)
	}
	// A labelled family and then a flat metric of the same name.
	if m := s.get(s.define("p", abi.MetricCounter, "http.requests", nil)); m.fqName != "wasm_http_requests_unlabelled" {
		t.Errorf("flat name over a labelled family: %s", m.fqName)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("the scrape fails: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "wasm_http_requests" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var pairs []string
			for _, l := range m.GetLabel() {
				pairs = append(pairs, l.GetName()+"="+l.GetValue())
			}
			got = append(got, strings.Join(pairs, ","))
		}
	}
	want := []string{"plugin=p,route=api,status=200", "plugin=p,route=web,status=404"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("wasm_http_requests samples %v, want %v", got, want)
	}
}
