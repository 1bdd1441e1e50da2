package wasm

import (
	"reflect"
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// TestTaggerExtract follows Envoy's tag extraction: every regex is
// searched for in the whole name, its first group is cut, its second (or
// its only) group is the value.
func TestTaggerExtract(t *testing.T) {
	tg := newTagger([]config.StatsTag{
		{TagName: "value", Regex: `(_value=([a-zA-Z]+))`},
		{TagName: "reporter", Regex: `(_reporter=([a-zA-Z]+))`},
		{TagName: "code", Regex: `\.code\.(\d+)`},
		{TagName: "never", Regex: `(x)?nomatch`},
		{TagName: "zone", FixedValue: "eu"},
	})
	for _, tc := range []struct {
		name, base string
		pairs      []string
	}{
		{"counts_value=foo_reporter=sdk", "counts", []string{"value=foo", "reporter=sdk", "zone=eu"}},
		{"counts_reporter=sdk_value=foo", "counts", []string{"value=foo", "reporter=sdk", "zone=eu"}},
		// One group: it is both the value and what is cut.
		{"http.code.503.total", "http.code..total", []string{"code=503", "zone=eu"}},
		{"plain", "plain", []string{"zone=eu"}},
		// A group that took no part in the match gives no label.
		{"a_nomatch", "a_nomatch", []string{"zone=eu"}},
	} {
		base, pairs := tg.extract(tc.name)
		if base != tc.base || !reflect.DeepEqual(pairs, tc.pairs) {
			t.Errorf("extract(%q) = %q %v, want %q %v", tc.name, base, pairs, tc.base, tc.pairs)
		}
	}
	if base, pairs := (*tagger)(nil).extract("a;b=c"); base != "a;b=c" || pairs != nil {
		t.Errorf("a nil tagger changed the name: %q %v", base, pairs)
	}
}

// TestStatsTagsWithConventions: the plugin's tags come first, then the
// conventions a filter may use without them apply to what is left.
func TestStatsTagsWithConventions(t *testing.T) {
	s := newMetricStore()
	tg := newTagger([]config.StatsTag{{TagName: "zone", FixedValue: "eu"}})
	m := s.get(s.define("p", abi.MetricCounter, "istio_requests_total.reporter=.=source;.;", tg))
	if m.fqName != "wasm_istio_requests_total" || !reflect.DeepEqual(m.labels, []string{"zone", "reporter"}) ||
		!reflect.DeepEqual(m.values, []string{"eu", "source"}) {
		t.Errorf("got %s %v %v", m.fqName, m.labels, m.values)
	}
	m = s.get(s.define("p", abi.MetricCounter, "calls;route=api", tg))
	if m.fqName != "wasm_calls" || !reflect.DeepEqual(m.labels, []string{"zone", "route"}) {
		t.Errorf("got %s %v %v", m.fqName, m.labels, m.values)
	}
}

// TestStatsTagsActivate: metrics defined under a plugin's previous tags
// stop being exported once a configuration with other tags is live, and
// the families are named again so that the new ones do not clash with
// the old.
func TestStatsTagsActivate(t *testing.T) {
	s := newMetricStore()
	oldTags := newTagger([]config.StatsTag{{TagName: "a", Regex: `(_a=(\w+))`}})
	newTags := newTagger([]config.StatsTag{{TagName: "b", Regex: `(_a=(\w+))`}})
	old := s.get(s.define("p", abi.MetricCounter, "n_a=1", oldTags))
	s.activate(map[string]string{"p": oldTags.signature()})
	// The new plugin defines its metric before its configuration is live:
	// the family's label set is the old one's, so it falls back.
	fresh := s.get(s.define("p", abi.MetricCounter, "n_a=1", newTags))
	if fresh == old {
		t.Fatal("new tags reused the metric of the old ones")
	}
	s.activate(map[string]string{"p": newTags.signature()})
	if fresh.fqName != "wasm_n" || !reflect.DeepEqual(fresh.labels, []string{"b"}) {
		t.Errorf("after activation: %s %v", fresh.fqName, fresh.labels)
	}
	if s.exported(old) || !s.exported(fresh) {
		t.Errorf("exported: old %v, new %v", s.exported(old), s.exported(fresh))
	}
}
