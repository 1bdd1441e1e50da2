package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"time"
)

// wrkResult is the summary printed by wrk/report.lua.
type wrkResult struct {
	Requests   int64   `json:"requests"`
	DurationUS int64   `json:"duration_us"`
	Bytes      int64   `json:"bytes"`
	P50US      int64   `json:"p50_us"`
	P90US      int64   `json:"p90_us"`
	P99US      int64   `json:"p99_us"`
	P999US     int64   `json:"p999_us"`
	MaxUS      int64   `json:"max_us"`
	MeanUS     float64 `json:"mean_us"`
	ErrConnect int64   `json:"err_connect"`
	ErrRead    int64   `json:"err_read"`
	ErrWrite   int64   `json:"err_write"`
	ErrStatus  int64   `json:"err_status"`
	ErrTimeout int64   `json:"err_timeout"`
	// Non2xx counts responses outside 2xx; only wrk/count.lua reports it.
	Non2xx int64 `json:"non2xx"`
}

// errors returns the count of failed requests of every kind.
func (w wrkResult) errors() int64 {
	return w.ErrConnect + w.ErrRead + w.ErrWrite + w.ErrStatus + w.ErrTimeout
}

// rps returns completed requests per second over wrk's own measured time.
func (w wrkResult) rps() float64 {
	if w.DurationUS <= 0 {
		return 0
	}
	return float64(w.Requests) / (float64(w.DurationUS) / 1e6)
}

var wrkMarker = []byte("WRKJSON ")

// parseWrk finds the WRKJSON line in wrk's output.
func parseWrk(out []byte) (wrkResult, error) {
	i := bytes.Index(out, wrkMarker)
	if i < 0 {
		return wrkResult{}, errors.New("no WRKJSON line in wrk output")
	}
	line := out[i+len(wrkMarker):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	var r wrkResult
	if err := json.Unmarshal(line, &r); err != nil {
		return wrkResult{}, fmt.Errorf("parsing WRKJSON line: %w", err)
	}
	return r, nil
}

// wrkRun describes one run of wrk.
type wrkRun struct {
	cpu         int // CPU wrk is pinned to
	nice        int
	threads     int
	connections int
	duration    time.Duration
	script      string   // path of report.lua or count.lua
	headers     []string // extra request headers, "Name: value"
	url         string
}

func (w wrkRun) argv() []string {
	secs := int((w.duration + time.Second - 1) / time.Second)
	argv := pinned(w.cpu, w.nice,
		"wrk",
		"-t", strconv.Itoa(w.threads),
		"-c", strconv.Itoa(w.connections),
		"-d", strconv.Itoa(secs)+"s",
		"--timeout", "5s",
		"--latency",
		"-s", w.script,
	)
	for _, h := range w.headers {
		argv = append(argv, "-H", h)
	}
	return append(argv, w.url)
}

// run executes wrk and returns its summary and the CPU time it used.
func (w wrkRun) run(ctx context.Context) (wrkResult, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, w.duration+30*time.Second)
	defer cancel()
	argv := w.argv()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.SysProcAttr = ownSession()
	err := cmd.Start()
	if err == nil {
		favour(cmd.Process.Pid, w.nice)
		err = cmd.Wait()
	}
	out := buf.Bytes()
	if err != nil {
		return wrkResult{}, 0, fmt.Errorf("wrk %s: %w: %s", w.url, err, bytes.TrimSpace(out))
	}
	r, err := parseWrk(out)
	if err != nil {
		return wrkResult{}, 0, fmt.Errorf("wrk %s: %w", w.url, err)
	}
	// taskset execs wrk in place, so this is wrk's own CPU time.
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, cpu, nil
}
