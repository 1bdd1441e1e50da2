package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// loadResult is what one load generator reports about one run, whichever
// generator it was.
type loadResult struct {
	Requests   int64 // completed requests
	DurationUS int64 // measured time, as the generator counts it
	// Latency percentiles at saturation; zero where the generator gives
	// none (h2load prints only min, max and mean).
	P50US, P90US, P99US, P999US, MaxUS int64
	MeanUS                             float64
	Errors                             int64 // failed requests: socket errors, timeouts, and 4xx/5xx where the generator counts them so
	Non2xx                             int64 // responses with a status outside 2xx, where counted
}

func (l loadResult) rps() float64 {
	if l.DurationUS <= 0 {
		return 0
	}
	return float64(l.Requests) / (float64(l.DurationUS) / 1e6)
}

// load returns the summary of a wrk run as a loadResult.
func (w wrkResult) load() loadResult {
	return loadResult{
		Requests: w.Requests, DurationUS: w.DurationUS,
		P50US: w.P50US, P90US: w.P90US, P99US: w.P99US, P999US: w.P999US, MaxUS: w.MaxUS, MeanUS: w.MeanUS,
		Errors: w.errors(), Non2xx: w.Non2xx,
	}
}

// loadRunner runs one load generator for a given time and returns its
// summary and the CPU time the generator used.
type loadRunner interface {
	runFor(ctx context.Context, d time.Duration) (loadResult, time.Duration, error)
}

var (
	_ loadRunner = wrkRun{}
	_ loadRunner = h2loadRun{}
	_ loadRunner = benchRun{}
)

func (w wrkRun) runFor(ctx context.Context, d time.Duration) (loadResult, time.Duration, error) {
	w.duration = d
	r, cpu, err := w.run(ctx)
	return r.load(), cpu, err
}

// runTool runs argv in a session of its own at niceness nice, and returns
// its output and CPU time. The pinned argv execs the tool in place, so the
// CPU time is the tool's own.
func runTool(ctx context.Context, nice int, timeout time.Duration, argv []string) (stdout, stderr []byte, cpu time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.SysProcAttr = ownSession()
	err = cmd.Start()
	if err == nil {
		favour(cmd.Process.Pid, nice)
		err = cmd.Wait()
	}
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	return o.Bytes(), e.Bytes(), cpu, err
}

// h2loadRun is one run of nghttp2's h2load: HTTP/2 over TLS, several
// concurrent streams per connection, closed loop.
type h2loadRun struct {
	cpu         int
	nice        int
	threads     int
	connections int
	streams     int // -m: concurrent streams per connection
	url         string
}

func (h h2loadRun) argv(d time.Duration) []string {
	secs := int((d + time.Second - 1) / time.Second)
	return pinned(h.cpu, h.nice,
		"h2load",
		"-t", strconv.Itoa(h.threads),
		"-c", strconv.Itoa(h.connections),
		"-m", strconv.Itoa(h.streams),
		"-D", strconv.Itoa(secs),
		h.url,
	)
}

func (h h2loadRun) runFor(ctx context.Context, d time.Duration) (loadResult, time.Duration, error) {
	out, errOut, cpu, err := runTool(ctx, h.nice, d+30*time.Second, h.argv(d))
	if err != nil {
		return loadResult{}, 0, fmt.Errorf("h2load %s: %w: %s", h.url, err, oneLine(string(append(errOut, out...)), 400))
	}
	r, err := parseH2load(out)
	if err != nil {
		return loadResult{}, 0, fmt.Errorf("h2load %s: %w: %s", h.url, err, oneLine(string(out), 400))
	}
	return r, cpu, nil
}

// parseH2load reads the summary h2load prints:
//
//	finished in 5.00s, 41234.20 req/s, 4.12MB/s
//	requests: 206171 total, 206811 started, 206171 done, 206171 succeeded, 0 failed, 0 errored, 0 timeout
//	status codes: 206171 2xx, 0 3xx, 0 4xx, 0 5xx
//	...
//	                     min         max         mean         sd        +/- sd
//	time for request:      210us     21.50ms      7.71ms      1.02ms    81.23%
//
// Requests counts the succeeded ones; Errors the failed and timed out.
func parseH2load(out []byte) (loadResult, error) {
	var r loadResult
	var seen struct{ finished, requests, status bool }
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "finished in "):
			f := strings.Fields(strings.TrimPrefix(line, "finished in "))
			if len(f) < 1 {
				return r, errors.New("short 'finished in' line")
			}
			d, err := time.ParseDuration(strings.TrimSuffix(f[0], ","))
			if err != nil {
				return r, fmt.Errorf("finished in: %w", err)
			}
			r.DurationUS = d.Microseconds()
			seen.finished = true
		case strings.HasPrefix(line, "requests: "):
			counts, err := countsByLabel(strings.TrimPrefix(line, "requests: "))
			if err != nil {
				return r, fmt.Errorf("requests: %w", err)
			}
			r.Requests = counts["succeeded"]
			r.Errors = counts["failed"] + counts["timeout"]
			seen.requests = true
		case strings.HasPrefix(line, "status codes: "):
			counts, err := countsByLabel(strings.TrimPrefix(line, "status codes: "))
			if err != nil {
				return r, fmt.Errorf("status codes: %w", err)
			}
			r.Non2xx = counts["3xx"] + counts["4xx"] + counts["5xx"]
			seen.status = true
		case strings.HasPrefix(line, "time for request:"):
			f := strings.Fields(strings.TrimPrefix(line, "time for request:"))
			if len(f) < 3 {
				return r, errors.New("short 'time for request' line")
			}
			max, err := time.ParseDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("time for request, max: %w", err)
			}
			mean, err := time.ParseDuration(f[2])
			if err != nil {
				return r, fmt.Errorf("time for request, mean: %w", err)
			}
			r.MaxUS, r.MeanUS = max.Microseconds(), float64(mean.Nanoseconds())/1e3
		}
	}
	if !seen.finished || !seen.requests || !seen.status {
		return r, errors.New("no h2load summary in the output")
	}
	return r, nil
}

// countsByLabel parses "206171 total, 0 failed, ..." into a map by label.
func countsByLabel(s string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		if len(f) != 2 {
			return nil, fmt.Errorf("unexpected %q", strings.TrimSpace(part))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, err
		}
		out[f[1]] = n
	}
	return out, nil
}

// benchRun is one closed-loop run of `wasmgate bench`, used where neither
// wrk nor h2load speaks the protocol (HTTP/3).
type benchRun struct {
	bin         string
	cpu         int
	nice        int
	protocol    string // -p: h1, h2 or h3
	connections int
	streams     int
	url         string
}

func (b benchRun) argv(d time.Duration) []string {
	return pinned(b.cpu, b.nice,
		b.bin, "bench",
		"-o", "json", "-q", "-k",
		"-p", b.protocol,
		"-c", strconv.Itoa(b.connections),
		"--streams", strconv.Itoa(b.streams),
		"-d", d.String(),
		b.url,
	)
}

func (b benchRun) runFor(ctx context.Context, d time.Duration) (loadResult, time.Duration, error) {
	out, errOut, cpu, err := runTool(ctx, b.nice, d+30*time.Second, b.argv(d))
	// bench exits non-zero when requests failed, yet still reports.
	r, perr := parseBench(out)
	if perr != nil {
		if err != nil {
			return r, 0, fmt.Errorf("wasmgate bench %s: %w: %s", b.url, err, oneLine(string(errOut), 400))
		}
		return r, 0, perr
	}
	return r, cpu, nil
}

// benchReport is the part of `wasmgate bench -o json` a closed-loop run
// reads.
type benchReport struct {
	Elapsed   time.Duration   `json:"elapsed_ns"`
	Responses int64           `json:"responses"`
	Errors    int64           `json:"errors"`
	Aborted   string          `json:"aborted"`
	Status    map[int]int64   `json:"status"`
	Latency   benchLatencyRep `json:"latency"`
}

type benchLatencyRep struct {
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p99_9_ns"`
	Max  time.Duration `json:"max_ns"`
}

// parseBench reads a closed-loop `wasmgate bench -o json` report.
// Requests counts the 2xx responses; Errors the failed requests and the
// other responses.
func parseBench(out []byte) (loadResult, error) {
	var rep benchReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return loadResult{}, fmt.Errorf("parsing wasmgate bench output: %w", err)
	}
	if rep.Responses == 0 && rep.Aborted != "" {
		return loadResult{}, fmt.Errorf("wasmgate bench: no response: %s", rep.Aborted)
	}
	r := loadResult{
		DurationUS: rep.Elapsed.Microseconds(),
		P50US:      rep.Latency.P50.Microseconds(),
		P90US:      rep.Latency.P90.Microseconds(),
		P99US:      rep.Latency.P99.Microseconds(),
		P999US:     rep.Latency.P999.Microseconds(),
		MaxUS:      rep.Latency.Max.Microseconds(),
		MeanUS:     float64(rep.Latency.Mean.Nanoseconds()) / 1e3,
		Errors:     rep.Errors,
	}
	for code, n := range rep.Status {
		if code >= 200 && code < 300 {
			r.Requests += n
		} else {
			r.Non2xx += n
		}
	}
	r.Errors += r.Non2xx
	return r, nil
}
