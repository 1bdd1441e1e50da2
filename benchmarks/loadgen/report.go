package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"
)

// Report is the outcome of one run. It is plain data and round-trips
// through JSON unchanged (durations are integers of nanoseconds).
type Report struct {
	Protocol    Protocol  `json:"protocol"`
	Method      string    `json:"method"`
	Targets     []Target  `json:"targets"`
	Connections int       `json:"connections"`
	Streams     int       `json:"streams"`
	Rate        float64   `json:"rate,omitempty"` // requests per second of the open loop; 0 for the closed loop
	Start       time.Time `json:"start"`
	// Elapsed is the measured part of the run, warm-up excluded.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Responses counts measured requests that got a whole response, of
	// any status.
	Responses int64 `json:"responses"`
	// Errors counts measured requests that got no whole response.
	Errors int64 `json:"errors"`
	// Status5xx counts the responses (in Responses) with a 5xx status:
	// the report counts them as failed requests too, beside Errors.
	Status5xx int64 `json:"status_5xx"`
	// Throughput is Responses per second of Elapsed.
	Throughput float64 `json:"throughput_rps"`
	// Latency summarizes the measured responses. In the open loop each
	// latency is measured from the moment the request was due.
	Latency Latency `json:"latency"`
	// Percentiles is the latency distribution, for plots.
	Percentiles []PercentilePoint `json:"percentiles"`
	// Status counts responses by status code.
	Status map[int]int64 `json:"status"`
	// ErrorKinds counts errors by kind (see ErrorKind).
	ErrorKinds map[string]int64 `json:"errors_by_kind"`
	// BytesIn and BytesOut are the bytes on the wire (TCP payload, TLS
	// records included; UDP payload for HTTP/3), warm-up included.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	// Timeline is the throughput of each second of the measured part.
	Timeline []TimelinePoint `json:"timeline"`
	// Aborted says why the run ended early; empty when it ran its course.
	Aborted string `json:"aborted,omitempty"`
}

// Latency is a summary of a latency distribution.
type Latency struct {
	Min    time.Duration `json:"min_ns"`
	Mean   time.Duration `json:"mean_ns"`
	StdDev time.Duration `json:"stddev_ns"`
	P50    time.Duration `json:"p50_ns"`
	P90    time.Duration `json:"p90_ns"`
	P99    time.Duration `json:"p99_ns"`
	P999   time.Duration `json:"p99_9_ns"`
	P9999  time.Duration `json:"p99_99_ns"`
	Max    time.Duration `json:"max_ns"`
}

// PercentilePoint is one point of the latency distribution.
type PercentilePoint struct {
	Percentile float64       `json:"percentile"`
	Latency    time.Duration `json:"latency_ns"`
}

// TimelinePoint is one second of the run.
type TimelinePoint struct {
	Second    int   `json:"second"`
	Responses int64 `json:"responses"`
	Errors    int64 `json:"errors"`
	// Status5xx counts the second's responses with a 5xx status.
	Status5xx int64 `json:"status_5xx"`
}

func us(v int64) time.Duration { return time.Duration(v) * time.Microsecond }

func (r *runner) report(workers []*worker, _ time.Time, elapsed time.Duration) *Report {
	cfg := r.cfg
	rep := &Report{
		Protocol:    cfg.protocol(),
		Method:      cfg.method(),
		Targets:     append([]Target(nil), cfg.Targets...),
		Connections: cfg.connections(),
		Streams:     cfg.streams(),
		Rate:        cfg.Rate,
		Start:       r.measureStart.Round(0).UTC(),
		Elapsed:     elapsed,
		Status:      map[int]int64{},
		ErrorKinds:  map[string]int64{},
	}
	h := mergeHistograms(workers)
	var timeline []second
	for _, w := range workers {
		st := w.st
		for code, n := range st.status {
			if n > 0 {
				rep.Status[code] += n
			}
		}
		if st.badCode > 0 {
			rep.Status[0] += st.badCode
		}
		for k, n := range st.kinds {
			if n > 0 {
				rep.ErrorKinds[ErrorKind(k).String()] += n
				rep.Errors += n
			}
		}
		rep.BytesIn += st.bytesIn.Load()
		rep.BytesOut += st.bytesOut.Load()
		for i, s := range st.timeline {
			for len(timeline) <= i {
				timeline = append(timeline, second{})
			}
			timeline[i].Responses += s.Responses
			timeline[i].Errors += s.Errors
			timeline[i].Status5xx += s.Status5xx
		}
	}
	rep.Responses = h.TotalCount()
	for code, n := range rep.Status {
		if code >= 500 && code < 600 {
			rep.Status5xx += n
		}
	}
	if elapsed > 0 {
		rep.Throughput = float64(rep.Responses) / elapsed.Seconds()
	}
	for i, s := range timeline {
		rep.Timeline = append(rep.Timeline, TimelinePoint{Second: i, Responses: s.Responses, Errors: s.Errors, Status5xx: s.Status5xx})
	}
	if rep.Responses > 0 {
		rep.Latency = Latency{
			Min:    us(h.Min()),
			Mean:   time.Duration(h.Mean() * float64(time.Microsecond)),
			StdDev: time.Duration(h.StdDev() * float64(time.Microsecond)),
			P50:    us(h.ValueAtQuantile(50)),
			P90:    us(h.ValueAtQuantile(90)),
			P99:    us(h.ValueAtQuantile(99)),
			P999:   us(h.ValueAtQuantile(99.9)),
			P9999:  us(h.ValueAtQuantile(99.99)),
			Max:    us(h.Max()),
		}
		rep.Percentiles = percentileCurve(func(q float64) time.Duration { return us(h.ValueAtQuantile(q)) })
	}
	return rep
}

// percentileCurve samples the distribution at percentiles spaced evenly on
// the 1/(1-p) scale of HdrHistogram plots, up to 99.9999.
func percentileCurve(at func(q float64) time.Duration) []PercentilePoint {
	var pts []PercentilePoint
	for _, q := range curvePercentiles() {
		pts = append(pts, PercentilePoint{Percentile: q, Latency: at(q)})
	}
	pts = append(pts, PercentilePoint{Percentile: 100, Latency: at(100)})
	return pts
}

func curvePercentiles() []float64 {
	var qs []float64
	// Ten points per decade of 1/(1-p), from p = 0 to p = 99.9999.
	for i := 0; i <= 60; i++ {
		x := math.Pow(10, float64(i)/10)
		q := 100 * (1 - 1/x)
		qs = append(qs, math.Round(q*1e4)/1e4)
	}
	return qs
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("encoding report: %w", err)
	}
	return nil
}

// ReadReport reads a report written by WriteJSON from a file.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading report: %w", err)
	}
	rep, err := DecodeReport(b)
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	return rep, nil
}

// DecodeReport decodes a report written by WriteJSON. It accepts any
// well-formed JSON object; fields it does not know are ignored.
func DecodeReport(b []byte) (*Report, error) {
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("decoding report: %w", err)
	}
	return &rep, nil
}

// Mode names the loop of the run: "closed" or "open at N/s".
func (rep *Report) Mode() string {
	if rep.Rate > 0 {
		return fmt.Sprintf("open loop at %s req/s", trimFloat(rep.Rate))
	}
	return "closed loop"
}

// Failed counts the requests that failed: those that got no response and
// those answered with a 5xx status (counted from Status, so that reports
// written before Status5xx existed count them too).
func (rep *Report) Failed() int64 {
	n := rep.Errors
	for code, c := range rep.Status {
		if code >= 500 && code < 600 {
			n += c
		}
	}
	return n
}

// WriteText writes the report for people.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	streams := ""
	if rep.Streams > 1 {
		streams = fmt.Sprintf(" x %d streams", rep.Streams)
	}
	fmt.Fprintf(&b, "%s, %s, %d connections%s, %s\n", protoName(rep.Protocol), rep.Mode(), rep.Connections, streams, fmtDur(rep.Elapsed))
	for _, t := range rep.Targets {
		weight := ""
		if len(rep.Targets) > 1 {
			weight = fmt.Sprintf("  (weight %d)", max(t.Weight, 1))
		}
		fmt.Fprintf(&b, "  %s %s%s\n", rep.Method, t.URL, weight)
	}
	fmt.Fprintf(&b, "\n  Requests    %d responses, %d errors, %.1f req/s\n", rep.Responses, rep.Failed(), rep.Throughput)
	if rep.Failed() > 0 {
		fmt.Fprintf(&b, "              errors: %d 5xx responses, %d requests without a response\n", rep.Failed()-rep.Errors, rep.Errors)
	}
	l := rep.Latency
	fmt.Fprintf(&b, "  Latency     min %s  mean %s  stdev %s\n", fmtDur(l.Min), fmtDur(l.Mean), fmtDur(l.StdDev))
	fmt.Fprintf(&b, "              p50 %s  p90 %s  p99 %s  p99.9 %s  p99.99 %s  max %s\n",
		fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.P9999), fmtDur(l.Max))
	if rep.Rate > 0 {
		fmt.Fprintf(&b, "              (measured from when each request was due)\n")
	}
	codes := make([]int, 0, len(rep.Status))
	for c := range rep.Status {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	b.WriteString("  Status     ")
	if len(codes) == 0 {
		b.WriteString(" none")
	}
	for _, c := range codes {
		fmt.Fprintf(&b, " %d: %d", c, rep.Status[c])
	}
	b.WriteString("\n  Errors     ")
	if len(rep.ErrorKinds) == 0 {
		b.WriteString(" none")
	}
	for _, k := range errorKindNames {
		if n := rep.ErrorKinds[k]; n > 0 {
			fmt.Fprintf(&b, " %s: %d", k, n)
		}
	}
	fmt.Fprintf(&b, "\n  Transfer    in %s, out %s", fmtBytes(rep.BytesIn), fmtBytes(rep.BytesOut))
	if rep.Elapsed > 0 {
		fmt.Fprintf(&b, " (%s/s in)", fmtBytes(int64(float64(rep.BytesIn)/rep.Elapsed.Seconds())))
	}
	b.WriteString("\n")
	if rep.Aborted != "" {
		fmt.Fprintf(&b, "\n  Ended early: %s\n", rep.Aborted)
	}
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	return nil
}

func protoName(p Protocol) string {
	switch p {
	case HTTP2:
		return "HTTP/2"
	case HTTP3:
		return "HTTP/3"
	}
	return "HTTP/1.1"
}

// fmtDur prints a duration in the unit that suits it.
func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func trimFloat(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", f), "0"), ".")
}
