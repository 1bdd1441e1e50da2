package wasm

import (
	"regexp"
	"sort"
	"strings"

	"github.com/wasmgate/wasmgate/config"
)

// tagger extracts labels from a plugin's metric names, as Envoy's
// stats_tags extract tags from its stats' names. A nil tagger extracts
// none.
type tagger struct {
	// sig tells two taggers apart: the JSON-free text of the tags, so
	// that a plugin whose stats_tags change names its metrics anew.
	sig  string
	tags []tagSpec
}

type tagSpec struct {
	label string         // the Prometheus label
	re    *regexp.Regexp // nil for a fixed value
	fixed string
}

// newTagger compiles a plugin's stats_tags, which validation checked.
func newTagger(tags []config.StatsTag) *tagger {
	if len(tags) == 0 {
		return nil
	}
	t := &tagger{}
	var sig strings.Builder
	for _, st := range tags {
		spec := tagSpec{label: config.PromLabel(st.TagName), fixed: st.FixedValue}
		if st.Regex != "" {
			spec.re = regexp.MustCompile(st.Regex)
		}
		t.tags = append(t.tags, spec)
		sig.WriteString(st.TagName + "\x00" + st.Regex + "\x00" + st.FixedValue + "\x00")
	}
	t.sig = sig.String()
	return t
}

func (t *tagger) signature() string {
	if t == nil {
		return ""
	}
	return t.sig
}

// extract returns name less the parts its regexes cut, and the
// "label=value" pairs they and the fixed values give. As in Envoy, every
// regex is searched for in the whole name: the first capture group of a
// match is cut, and the second group is the value (the first, when there
// is one group). A regex that does not match, or whose groups did not
// take part in the match, gives no label.
func (t *tagger) extract(name string) (base string, pairs []string) {
	if t == nil {
		return name, nil
	}
	type span struct{ from, to int }
	var cut []span
	for _, spec := range t.tags {
		if spec.re == nil {
			pairs = append(pairs, spec.label+"="+spec.fixed)
			continue
		}
		m := spec.re.FindStringSubmatchIndex(name)
		if m == nil || m[2] < 0 {
			continue
		}
		value := name[m[2]:m[3]]
		if len(m) >= 6 && m[4] >= 0 {
			value = name[m[4]:m[5]]
		}
		pairs = append(pairs, spec.label+"="+value)
		cut = append(cut, span{m[2], m[3]})
	}
	if len(cut) == 0 {
		return name, pairs
	}
	sort.Slice(cut, func(i, j int) bool { return cut[i].from < cut[j].from })
	var b strings.Builder
	at := 0
	for _, c := range cut {
		if c.from > at {
			b.WriteString(name[at:c.from])
		}
		at = max(at, c.to)
	}
	b.WriteString(name[at:])
	return b.String(), pairs
}
