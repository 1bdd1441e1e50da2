package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// openRun describes one open-loop run of `wasmgate bench`: requests sent at
// a constant rate, each latency measured from when the request was due, so
// that a stall shows in the percentiles instead of slowing the load down.
type openRun struct {
	bin         string // the wasmgate binary
	cpu         int
	nice        int
	connections int
	rate        float64
	duration    time.Duration
	warmup      time.Duration
	url         string
	headers     []string // extra request headers, "Name: value"
	// saveTo, if set, receives the report as printed, for inspection.
	saveTo string
}

func (o openRun) argv() []string {
	argv := pinned(o.cpu, o.nice,
		o.bin, "bench",
		"-o", "json", "-q",
		"-c", strconv.Itoa(o.connections),
		"--rate", strconv.FormatFloat(o.rate, 'f', -1, 64),
		"-d", o.duration.String(),
		"--warmup", o.warmup.String(),
	)
	for _, h := range o.headers {
		argv = append(argv, "-H", h)
	}
	return append(argv, o.url)
}

// openResult is the part of `wasmgate bench -o json` the suite reads.
type openResult struct {
	Throughput float64 `json:"throughput_rps"`
	Responses  int64   `json:"responses"`
	Errors     int64   `json:"errors"`
	Aborted    string  `json:"aborted"`
	Latency    struct {
		P50  time.Duration `json:"p50_ns"`
		P99  time.Duration `json:"p99_ns"`
		P999 time.Duration `json:"p99_9_ns"`
	} `json:"latency"`
}

func parseOpen(out []byte) (openResult, error) {
	var r openResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("parsing wasmgate bench output: %w", err)
	}
	return r, nil
}

// run executes bench and returns its report and the CPU time it used.
func (o openRun) run(ctx context.Context) (openResult, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, o.warmup+o.duration+30*time.Second)
	defer cancel()
	argv := o.argv()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = ownSession()
	err := cmd.Start()
	if err == nil {
		favour(cmd.Process.Pid, o.nice)
		err = cmd.Wait()
	}
	var cpu time.Duration
	if cmd.ProcessState != nil {
		// taskset execs bench in place: this is bench's own CPU time.
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if o.saveTo != "" {
		_ = os.WriteFile(o.saveTo, stdout.Bytes(), 0o644)
		_ = os.WriteFile(o.saveTo+".stderr", stderr.Bytes(), 0o644)
	}
	// bench exits non-zero when requests failed, yet still reports.
	r, perr := parseOpen(stdout.Bytes())
	if perr != nil {
		if err != nil {
			return r, cpu, fmt.Errorf("wasmgate bench %s: %w: %s", o.url, err, bytes.TrimSpace(stderr.Bytes()))
		}
		return r, cpu, perr
	}
	return r, cpu, nil
}

// benchAvailable reports whether bin has a working bench command.
func benchAvailable(bin string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "bench", "--help").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("`wasmgate bench --help` failed: %v: %s", err, oneLine(string(out), 200))
	}
	if !bytes.Contains(out, []byte("--rate")) {
		return "`wasmgate bench` has no --rate flag"
	}
	return ""
}
