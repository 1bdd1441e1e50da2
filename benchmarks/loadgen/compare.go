package loadgen

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// ComparisonRow is one metric of two runs side by side.
type ComparisonRow struct {
	Metric string  `json:"metric"`
	Unit   string  `json:"unit"`
	A      float64 `json:"a"`
	B      float64 `json:"b"`
	// Ratio is B/A; nil when A is zero.
	Ratio *float64 `json:"ratio"`
	// Better says which run did better on this metric: "a", "b" or "".
	Better string `json:"better"`
}

// Compare puts the metrics of two reports side by side. Higher is better
// for throughput; lower is better for latencies and errors.
func Compare(a, b *Report) []ComparisonRow {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rows := []ComparisonRow{
		{Metric: "throughput", Unit: "req/s", A: a.Throughput, B: b.Throughput},
		{Metric: "responses", Unit: "", A: float64(a.Responses), B: float64(b.Responses)},
		{Metric: "errors", Unit: "", A: float64(a.Failed()), B: float64(b.Failed())},
		{Metric: "latency p50", Unit: "ms", A: ms(a.Latency.P50), B: ms(b.Latency.P50)},
		{Metric: "latency p90", Unit: "ms", A: ms(a.Latency.P90), B: ms(b.Latency.P90)},
		{Metric: "latency p99", Unit: "ms", A: ms(a.Latency.P99), B: ms(b.Latency.P99)},
		{Metric: "latency p99.9", Unit: "ms", A: ms(a.Latency.P999), B: ms(b.Latency.P999)},
		{Metric: "latency p99.99", Unit: "ms", A: ms(a.Latency.P9999), B: ms(b.Latency.P9999)},
		{Metric: "latency max", Unit: "ms", A: ms(a.Latency.Max), B: ms(b.Latency.Max)},
		{Metric: "bytes in", Unit: "B", A: float64(a.BytesIn), B: float64(b.BytesIn)},
		{Metric: "bytes out", Unit: "B", A: float64(a.BytesOut), B: float64(b.BytesOut)},
	}
	for i := range rows {
		r := &rows[i]
		if r.A != 0 {
			ratio := r.B / r.A
			r.Ratio = &ratio
		}
		higherBetter := r.Metric == "throughput" || r.Metric == "responses"
		lowerBetter := r.Metric == "errors" || strings.HasPrefix(r.Metric, "latency")
		switch {
		case r.A == r.B:
		case higherBetter && r.B > r.A, lowerBetter && r.B < r.A:
			r.Better = "b"
		case higherBetter, lowerBetter:
			r.Better = "a"
		}
	}
	return rows
}

// WriteComparison writes the comparison of a and b as a table, naming the
// runs nameA and nameB.
func WriteComparison(w io.Writer, nameA string, a *Report, nameB string, b *Report) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "A: %s\n   %s, %s, %d connections, %s\n", nameA, protoName(a.Protocol), a.Mode(), a.Connections, fmtDur(a.Elapsed))
	fmt.Fprintf(&sb, "B: %s\n   %s, %s, %d connections, %s\n\n", nameB, protoName(b.Protocol), b.Mode(), b.Connections, fmtDur(b.Elapsed))
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\tA\tB\tB/A\tbetter\t")
	for _, r := range Compare(a, b) {
		ratio := "-"
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.3f", *r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.Metric, fmtValue(r.A, r.Unit), fmtValue(r.B, r.Unit), ratio, strings.ToUpper(r.Better))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("formatting comparison: %w", err)
	}
	if _, err := io.WriteString(w, sb.String()); err != nil {
		return fmt.Errorf("writing comparison: %w", err)
	}
	return nil
}

func fmtValue(v float64, unit string) string {
	switch unit {
	case "ms":
		return fmtDur(time.Duration(v * float64(time.Millisecond)))
	case "B":
		return fmtBytes(int64(v))
	case "req/s":
		return fmt.Sprintf("%.1f/s", v)
	}
	return trimFloat(v)
}
