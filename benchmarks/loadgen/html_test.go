package loadgen

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHTMLReportCountsAndAxes: 5xx responses are failed requests in the
// summary and on the timeline; the last, partial second is not drawn as a
// dip; every axis label lies inside the picture.
func TestHTMLReportCountsAndAxes(t *testing.T) {
	rep := &Report{
		Protocol: HTTP1, Method: "GET", Connections: 4, Targets: []Target{{URL: "http://127.0.0.1:1/"}},
		Elapsed:   3400 * time.Millisecond,
		Responses: 3003, Status: map[int]int64{200: 3000, 500: 3}, Status5xx: 3,
		ErrorKinds: map[string]int64{},
		Timeline: []TimelinePoint{
			{Second: 0, Responses: 1000},
			{Second: 1, Responses: 1000, Status5xx: 3},
			{Second: 2, Responses: 990},
			{Second: 3, Responses: 13}, // 0.4s, and the grace after it
		},
		Percentiles: []PercentilePoint{{Percentile: 50, Latency: time.Millisecond}, {Percentile: 100, Latency: 9 * time.Millisecond}},
		Latency:     Latency{P50: time.Millisecond, Max: 9 * time.Millisecond},
	}
	var b strings.Builder
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if !strings.Contains(page, "3003 responses, 3 errors") || !strings.Contains(page, "3 5xx responses") {
		t.Errorf("the summary does not count the 5xx responses as errors:\n%s", page)
	}
	timeline := page[strings.Index(page, "Throughput over time"):]
	blue := regexp.MustCompile(`<polyline class="line" points="([^"]*)"`).FindStringSubmatch(timeline)
	if blue == nil {
		t.Fatalf("no throughput line:\n%s", timeline)
	}
	if n := len(strings.Fields(blue[1])); n != 2*3 {
		t.Errorf("the throughput line has %d points, want 6 (3 whole seconds): %s", n, blue[1])
	}
	if !strings.Contains(timeline, `<polyline class="err"`) {
		t.Errorf("the 5xx responses are not drawn as errors")
	}
	for _, m := range regexp.MustCompile(`<text x="([0-9.]+)" y="[0-9.]+" text-anchor="(\w+)">([^<]*)</text>`).FindAllStringSubmatch(page, -1) {
		x, _ := strconv.ParseFloat(m[1], 64)
		// About 6 px a character at 11 px.
		w := 6.5 * float64(len(m[3]))
		left, right := x-w/2, x+w/2
		switch m[2] {
		case "end":
			left, right = x-w, x
		case "start":
			left, right = x, x+w
		}
		if left < 0 || right > svgW {
			t.Errorf("label %q spans %.0f..%.0f, outside 0..%g", m[3], left, right, svgW)
		}
	}
}

// TestHTMLShortRun: a run shorter than a second is drawn as a rate.
func TestHTMLShortRun(t *testing.T) {
	rep := &Report{Elapsed: 500 * time.Millisecond, Timeline: []TimelinePoint{{Responses: 100}}}
	tl := wholeSeconds(rep)
	if len(tl) != 1 || tl[0].Responses != 200 {
		t.Fatalf("timeline %+v, want one second of 200", tl)
	}
}
