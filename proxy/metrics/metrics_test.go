package metrics_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/metrics"
)

// TestDocumentedSeriesBeforeAnyEvent: every wasmgate_ metric the README
// names is exposed, at zero, as soon as a snapshot has resolved its
// routes (their mirrors too) and clusters, before any request or error.
func TestDocumentedSeriesBeforeAnyEvent(t *testing.T) {
	m := metrics.New()
	m.Route("public", "default", "demo")
	m.Cluster("demo")
	m.TCP("db", "demo")
	m.Mirror("public", "default", "shadow")

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range regexp.MustCompile(`wasmgate_[a-z_]+`).FindAllString(string(readme), -1) {
		names[n] = true
	}
	if !names["wasmgate_upstream_errors_total"] {
		t.Fatalf("the README no longer names wasmgate_upstream_errors_total: update this test")
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exposed := map[string]int{}
	for _, f := range families {
		exposed[f.GetName()] = len(f.GetMetric())
	}
	for n := range names {
		if exposed[n] == 0 {
			t.Errorf("%s is named in the README but has no series before the first event", n)
		}
	}
}

// TestUpstreamErrorKinds: each kind of upstream failure has its series
// per cluster, at zero, and the kinds are the cluster package's.
func TestUpstreamErrorKinds(t *testing.T) {
	m := metrics.New()
	m.Cluster("demo")
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "wasmgate_upstream_errors_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["cluster"]+"/"+labels["kind"]] = s.GetCounter().GetValue()
		}
	}
	want := 0
	for f := cluster.FailureConnect; f <= cluster.FailureOverflow; f++ {
		want++
		v, ok := got["demo/"+f.String()]
		if !ok || v != 0 {
			t.Errorf("demo/%s: %v %v, want a series at zero", f, v, ok)
		}
	}
	if len(got) != want {
		t.Errorf("series %v, want one per kind of failure", got)
	}
}
