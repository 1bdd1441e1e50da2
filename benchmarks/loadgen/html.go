package loadgen

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// WriteHTML writes the report as one self-contained page: a summary, the
// latency by percentile (on the 1/(1-p) scale of HdrHistogram plots) and
// the throughput over time, drawn in inline SVG. The page fetches nothing.
func (rep *Report) WriteHTML(w io.Writer) error {
	data := struct {
		*Report
		Title      string
		Text       string
		Percentile template.HTML
		Timeline   template.HTML
	}{Report: rep, Title: "wasmgate bench: " + protoName(rep.Protocol) + ", " + rep.Mode()}
	var sb strings.Builder
	if err := rep.WriteText(&sb); err != nil {
		return err
	}
	data.Text = sb.String()
	data.Percentile = percentileSVG(rep)
	data.Timeline = timelineSVG(rep)
	if err := pageTemplate.Execute(w, data); err != nil {
		return fmt.Errorf("writing HTML report: %w", err)
	}
	return nil
}

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:60em}
pre{background:#f6f6f6;padding:1em;overflow-x:auto}
svg{background:#fff;border:1px solid #ddd;margin:.5em 0}
svg text{font-size:11px;fill:#444}
.grid{stroke:#eee}.axis{stroke:#888}.line{fill:none;stroke:#1f6feb;stroke-width:2}.err{fill:none;stroke:#d1242f;stroke-width:1.5}
</style></head><body>
<h1>{{.Title}}</h1>
<pre>{{.Text}}</pre>
<h2>Latency by percentile</h2>
{{.Percentile}}
<h2>Throughput over time</h2>
{{.Timeline}}
</body></html>
`))

const (
	svgW, svgH             = 720.0, 320.0
	padL, padR, padT, padB = 64.0, 16.0, 16.0, 40.0
)

func svgOpen(b *strings.Builder, label string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" role="img" aria-label="%s">`,
		svgW, svgH, svgW, svgH, template.HTMLEscapeString(label))
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func yAxis(b *strings.Builder, top float64, unit string) {
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		y := svgH - padB - (svgH-padT-padB)*float64(i)/4
		fmt.Fprintf(b, `<line class="grid" x1="%g" x2="%g" y1="%.1f" y2="%.1f"/>`, padL, svgW-padR, y, y)
		fmt.Fprintf(b, `<text x="%g" y="%.1f" text-anchor="end">%s%s</text>`, padL-6, y+4, trimFloat(v), unit)
	}
	fmt.Fprintf(b, `<line class="axis" x1="%g" x2="%g" y1="%g" y2="%g"/>`, padL, padL, padT, svgH-padB)
	fmt.Fprintf(b, `<line class="axis" x1="%g" x2="%g" y1="%g" y2="%g"/>`, padL, svgW-padR, svgH-padB, svgH-padB)
}

func percentileSVG(rep *Report) template.HTML {
	var b strings.Builder
	svgOpen(&b, "latency by percentile")
	pts := rep.Percentiles
	if len(pts) == 0 {
		b.WriteString(`<text x="50%" y="50%" text-anchor="middle">no responses</text></svg>`)
		return template.HTML(b.String()) //nolint:gosec // built from numbers only
	}
	const decades = 6.0 // up to 99.9999%
	xOf := func(q float64) float64 {
		d := 0.0
		if q >= 100 {
			d = decades
		} else {
			d = math.Min(math.Log10(100/(100-q)), decades)
		}
		return padL + (svgW-padL-padR)*d/decades
	}
	var maxMS float64
	for _, p := range pts {
		maxMS = math.Max(maxMS, float64(p.Latency)/float64(time.Millisecond))
	}
	top := niceMax(maxMS)
	yOf := func(d time.Duration) float64 {
		return svgH - padB - (svgH-padT-padB)*(float64(d)/float64(time.Millisecond))/top
	}
	yAxis(&b, top, "ms")
	labels := []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"}
	for i, label := range labels {
		x := padL + (svgW-padL-padR)*float64(i)/decades
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" x2="%.1f" y1="%g" y2="%g"/>`, x, x, padT, svgH-padB)
		// The last label ends at the axis's end, inside the picture.
		anchor := "middle"
		if i == len(labels)-1 {
			anchor = "end"
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="%s">%s</text>`, x, svgH-padB+16, anchor, label)
	}
	b.WriteString(`<polyline class="line" points="`)
	for _, p := range pts {
		fmt.Fprintf(&b, "%.1f,%.1f ", xOf(p.Percentile), yOf(p.Latency))
	}
	b.WriteString(`"/>`)
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">percentile</text></svg>`, (svgW+padL)/2, svgH-6)
	return template.HTML(b.String()) //nolint:gosec // built from numbers only
}

// wholeSeconds is the timeline to plot: the seconds the measured run
// covered whole. The last second of a run that ended mid-second, and the
// responses that arrived in the grace after it, would be drawn as a dip in
// throughput that the target never had; they count in the totals. A run
// shorter than a second is plotted as its one second, scaled to a rate.
func wholeSeconds(rep *Report) []TimelinePoint {
	tl := rep.Timeline
	whole := int(rep.Elapsed / time.Second)
	if whole == 0 && len(tl) > 0 && rep.Elapsed > 0 {
		f := float64(time.Second) / float64(rep.Elapsed)
		p := tl[0]
		scale := func(v int64) int64 { return int64(math.Round(float64(v) * f)) }
		return []TimelinePoint{{Second: 0, Responses: scale(p.Responses), Errors: scale(p.Errors), Status5xx: scale(p.Status5xx)}}
	}
	if len(tl) > whole {
		tl = tl[:whole]
	}
	return tl
}

func timelineSVG(rep *Report) template.HTML {
	var b strings.Builder
	svgOpen(&b, "throughput over time")
	tl := wholeSeconds(rep)
	if len(tl) == 0 {
		b.WriteString(`<text x="50%" y="50%" text-anchor="middle">no data</text></svg>`)
		return template.HTML(b.String()) //nolint:gosec // built from numbers only
	}
	failed := func(p TimelinePoint) int64 { return p.Errors + p.Status5xx }
	var peak float64
	for _, p := range tl {
		peak = math.Max(peak, float64(max(p.Responses, failed(p))))
	}
	top := niceMax(peak)
	span := math.Max(float64(len(tl)), 1)
	xOf := func(s float64) float64 { return padL + (svgW-padL-padR)*s/span }
	yOf := func(v int64) float64 { return svgH - padB - (svgH-padT-padB)*float64(v)/top }
	yAxis(&b, top, "/s")
	step := max(1, len(tl)/10)
	for s := 0; s <= len(tl); s += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%ds</text>`, xOf(float64(s)), svgH-padB+16, s)
	}
	line := func(class string, v func(TimelinePoint) int64) {
		fmt.Fprintf(&b, `<polyline class="%s" points="`, class)
		for _, p := range tl {
			fmt.Fprintf(&b, "%.1f,%.1f %.1f,%.1f ", xOf(float64(p.Second)), yOf(v(p)), xOf(float64(p.Second+1)), yOf(v(p)))
		}
		b.WriteString(`"/>`)
	}
	line("line", func(p TimelinePoint) int64 { return p.Responses })
	for _, p := range tl {
		if failed(p) > 0 {
			line("err", failed)
			break
		}
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">seconds (blue: responses, red: errors: 5xx and no response)</text></svg>`, (svgW+padL)/2, svgH-6)
	return template.HTML(b.String()) //nolint:gosec // built from numbers only
}
