package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name  string
		line  string
		want  procStat
		valid bool
	}{
		{
			name:  "plain",
			line:  "4242 (nginx) S 1 4242 4242 0 -1 4194624 100 0 0 0 150 37 0 0 20 0 1 0 12345 1000 100",
			want:  procStat{pgrp: 4242, ticks: 187},
			valid: true,
		},
		{
			name:  "name with spaces and parentheses",
			line:  "7 (a) b (c) R 1 99 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1",
			want:  procStat{pgrp: 99, ticks: 7},
			valid: true,
		},
		{name: "truncated", line: "7 (x) R 1 2 3"},
		{name: "no name", line: "7 x R 1 2 3 4 5 6 7 8 9 10 11 12 13"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tt.line))
			if (err == nil) != tt.valid {
				t.Fatalf("err = %v, want valid = %v", err, tt.valid)
			}
			if tt.valid && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestGroupTicksOfThisProcess(t *testing.T) {
	pgrp := ownGroup(t)
	if _, err := groupTicks(pgrp); err != nil {
		t.Fatalf("groupTicks(own group %d): %v", pgrp, err)
	}
}

func TestParseCPUTimes(t *testing.T) {
	stat := `cpu  11714 0 7153 92842 340 0 1342 12 0 0
cpu0 5296 1 3642 46954 31 2 715 5 7 0
cpu1 6418 0 3511 45887 309 0 626 6 0 0
intr 1 2 3
ctxt 123
`
	got, err := parseCPUTimes([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	want0 := cpuTimes{task: 5296 + 1 + 3642, irq: 2 + 715, steal: 5, total: 5296 + 1 + 3642 + 46954 + 31 + 2 + 715 + 5}
	if got[0] != want0 {
		t.Errorf("cpu0 = %+v, want %+v", got[0], want0)
	}
	if len(got) != 2 {
		t.Errorf("got %d CPUs, want 2", len(got))
	}
	if got[0].busy() != want0.task+want0.irq+want0.steal {
		t.Errorf("busy = %d", got[0].busy())
	}
	if _, err := parseCPUTimes([]byte("cpu 1 2 3 4 5 6 7 8\n")); err == nil {
		t.Error("no per-CPU line: want an error")
	}
}

func TestParseWrk(t *testing.T) {
	out := []byte(`Running 3s test @ http://127.0.0.1:1/64
  1 threads and 64 connections
Requests/sec:  69272.47
WRKJSON {"requests":207817,"duration_us":3000000,"bytes":100,"p50_us":607,"p90_us":900,"p99_us":1483,"p999_us":2190,"max_us":5000,"mean_us":650.5,"err_connect":0,"err_read":1,"err_write":0,"err_status":2,"err_timeout":3}
`)
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 207817 || r.P50US != 607 || r.P99US != 1483 || r.errors() != 6 {
		t.Fatalf("parsed %+v", r)
	}
	if got, want := r.rps(), 207817.0/3; math.Abs(got-want) > 1e-6 {
		t.Errorf("rps = %v, want %v", got, want)
	}
	if _, err := parseWrk([]byte("Requests/sec: 1\n")); err == nil {
		t.Error("output without WRKJSON: want an error")
	}
}

func TestWrkArgv(t *testing.T) {
	w := wrkRun{cpu: 0, threads: 1, connections: 64, duration: 2500 * time.Millisecond, script: "r.lua", url: "http://x/64"}
	got := strings.Join(w.argv(), " ")
	want := "taskset -c 0 wrk -t 1 -c 64 -d 3s --timeout 5s --latency -s r.lua http://x/64"
	if got != want {
		t.Errorf("argv = %q, want %q", got, want)
	}
}

func TestPinned(t *testing.T) {
	if got, want := strings.Join(pinned(1, 0, "x", "-y"), " "), "taskset -c 1 x -y"; got != want {
		t.Errorf("pinned = %q, want %q", got, want)
	}
	if got, want := strings.Join(pinned(0, -5, "x"), " "), "nice -n -5 taskset -c 0 x"; got != want {
		t.Errorf("pinned = %q, want %q", got, want)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
}

func testResults() *results {
	return &results{
		Started:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Finished:    time.Date(2026, 1, 2, 3, 14, 5, 0, time.UTC),
		Rounds:      3,
		Duration:    "10s",
		Warmup:      "2s",
		Connections: 64,
		Threads:     1,
		ProxyCPU:    1,
		Payloads:    []payload{knownPayloads["64"], knownPayloads["16k"]},
		Scenarios: []scenarioInfo{
			{Name: "direct", Label: "direct (no proxy)"},
			{Name: "wasmgate", Label: "wasmgate", Skipped: "wasmgate did not answer"},
			{Name: "nginx", Label: "nginx", Failures: []string{"round 3: nginx did not answer"}},
		},
		Samples: []sample{
			{Scenario: "direct", Payload: "64", Round: 1, RPS: 100000, P50US: 500, P99US: 1500},
			{Scenario: "direct", Payload: "64", Round: 2, RPS: 80000, P50US: 600, P99US: 1600},
			{Scenario: "direct", Payload: "64", Round: 3, RPS: 90000, P50US: 550, P99US: 1550},
			{Scenario: "nginx", Payload: "64", Round: 1, RPS: 45000, P50US: 900, P99US: 2000, ProxyCPUUSPerReq: 14, ProxyCPUPct: 63},
			{Scenario: "nginx", Payload: "64", Round: 2, RPS: 60000, P50US: 800, P99US: 3000, ProxyCPUUSPerReq: 13, ProxyCPUPct: 78},
		},
	}
}

func TestSummarize(t *testing.T) {
	sums := summarize(testResults(), groupHTTP1, "64")
	if len(sums) != 3 {
		t.Fatalf("got %d summaries, want 3", len(sums))
	}
	direct, wasmgate, nginx := sums[0], sums[1], sums[2]
	if direct.rps != 90000 || direct.p50 != 550 || direct.n != 3 {
		t.Errorf("direct = %+v", direct)
	}
	if wasmgate.hasFigures {
		t.Errorf("skipped scenario has figures: %+v", wasmgate)
	}
	if nginx.rps != 52500 || nginx.cpuPerReq != 13.5 {
		t.Errorf("nginx = %+v", nginx)
	}
	if got, want := direct.vsNginx, 90000/52500.0; math.Abs(got-want) > 1e-9 {
		t.Errorf("direct vs nginx = %v, want %v", got, want)
	}
	if got, want := nginx.vsDirect, 52500/90000.0; math.Abs(got-want) > 1e-9 {
		t.Errorf("nginx vs direct = %v, want %v", got, want)
	}
	if nginx.cpuVsNginx != 1 || direct.cpuVsNginx != 0 {
		t.Errorf("CPU ratios: nginx %v, direct %v", nginx.cpuVsNginx, direct.cpuVsNginx)
	}
	// No samples at all for 16k: nothing to compare against.
	for _, s := range summarize(testResults(), groupHTTP1, "16k") {
		if s.hasFigures || s.vsNginx != 0 {
			t.Errorf("16k %s = %+v", s.scenario.Name, s)
		}
	}
}

func TestWriteReport(t *testing.T) {
	dir := t.TempDir()
	if err := writeReport(dir, testResults()); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| direct (no proxy) | 90,000 | 550 µs | 1.55 ms | — | — | 1.71× | 1.00× | — | 0 | 0% |",
		"| nginx | 52,500 | 850 µs | 2.50 ms | 13.50 | 70% | 1.00× | 0.58× | 1.00× | 0 | 0% |",
		"| wasmgate | — | — | — | — | — | — | — | — | not run | — |",
		"- **wasmgate**: wasmgate did not answer",
		"- **nginx**, round 3: nginx did not answer",
		"](results.svg)",
		"median over 3 rounds",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
	svg, err := os.ReadFile(filepath.Join(dir, "results.svg"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(svg)
	if !strings.HasPrefix(s, "<svg ") || !strings.HasSuffix(s, "</svg>\n") {
		t.Error("results.svg is not one svg element")
	}
	for _, want := range []string{">90,000<", ">52,500<", ">not run<", ">no proxy<", ">13.50 µs<"} {
		if !strings.Contains(s, want) {
			t.Errorf("results.svg lacks %q", want)
		}
	}
}

func TestDisturbedRunIsFlagged(t *testing.T) {
	res := testResults()
	res.MaxOtherPct = 10
	if strings.Contains(renderMarkdown(res), "disturbed") {
		t.Error("a quiet run is flagged as disturbed")
	}
	for i := range res.Samples {
		res.Samples[i].LoadCoreOtherPct = 40
	}
	if !strings.Contains(renderMarkdown(res), "used 40% of a pinned core in the median sample") {
		t.Error("a disturbed run is not flagged")
	}
	if !strings.Contains(renderSVG(res), "disturbed: others used 40% of a core") {
		t.Error("the plot of a disturbed run is not flagged")
	}
}

func TestFormatting(t *testing.T) {
	tests := []struct{ got, want string }{
		{thousands(0), "0"},
		{thousands(999.6), "1,000"},
		{thousands(1234567), "1,234,567"},
		{latency(812), "812 µs"},
		{latency(1234), "1.23 ms"},
		{latency(1234567), "1.23 s"},
		{ratio(0), "—"},
		{ratio(1.234), "1.23×"},
		{plural(1, "round"), "1 round"},
		{plural(3, "round"), "3 rounds"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// Every peer template renders with the fields the suite passes.
func TestPeerTemplatesRender(t *testing.T) {
	dir := t.TempDir()
	base := peerFields{Listen: "127.0.0.1:18080", ListenHost: "127.0.0.1", Upstream: "127.0.0.1:19000", Admin: "127.0.0.1:19901", Dir: dir}
	cert := &certFiles{Cert: "/c/cert.pem", Key: "/c/key.pem", CertKey: "/c/cert-key.pem"}
	for _, s := range scenarios() {
		if s.config == "" {
			continue
		}
		t.Run(s.name, func(t *testing.T) {
			f := s.fields(base, cert, "/b")
			want := []string{f.Listen, f.Upstream}
			if s.tls() {
				want = append(want, "/c/cert")
			}
			for _, name := range s.filters {
				if s.oneVM {
					want = append(want, "/b/firstparty.wasm", "vm_id: firstparty\n    root_id: "+name, "- plugin: "+name)
				} else {
					want = append(want, "/b/"+name+".wasm", "- plugin: "+name)
				}
			}
			if s.http3 && s.peer == "wasmgate" {
				want = append(want, "http3:\n      enabled: true")
			} else if s.http3 {
				want = append(want, "h3")
			}
			sub := filepath.Join(dir, s.name)
			if err := os.MkdirAll(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			path, err := renderConfig(filepath.Join("..", "peers"), s.config, sub, f)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range want {
				if !strings.Contains(string(b), want) {
					t.Errorf("rendered %s lacks %q", s.config, want)
				}
			}
			if strings.Contains(string(b), "{{") {
				t.Errorf("rendered %s still holds a template action", s.config)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		valid bool
	}{
		{"defaults", []string{"-bin", "/b"}, true},
		{"quick", []string{"-bin", "/b", "-quick"}, true},
		{"no bin", nil, false},
		{"unknown scenario", []string{"-bin", "/b", "-scenarios", "envoy"}, false},
		{"unknown payload", []string{"-bin", "/b", "-payloads", "1m"}, false},
		{"short duration", []string{"-bin", "/b", "-duration", "100ms"}, false},
		{"report only", []string{"-report-only"}, true},
		{"negative paired rate", []string{"-bin", "/b", "-paired-rate", "-1"}, false},
		{"no paired rate", []string{"-bin", "/b", "-paired-rate", "0"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt, err := parseFlags(tt.args)
			if (err == nil) != tt.valid {
				t.Fatalf("err = %v, want valid = %v", err, tt.valid)
			}
			if tt.name == "quick" && (opt.rounds != 1 || opt.duration != 3*time.Second) {
				t.Errorf("quick: rounds %d, duration %s", opt.rounds, opt.duration)
			}
		})
	}
}

func TestOpenLoop(t *testing.T) {
	o := openRun{bin: "/b/wasmgate", cpu: 0, connections: 64, rate: 5000, duration: 5 * time.Second, warmup: time.Second, url: "http://x/64"}
	got := strings.Join(o.argv(), " ")
	want := "taskset -c 0 /b/wasmgate bench -o json -q -c 64 --rate 5000 -d 5s --warmup 1s http://x/64"
	if got != want {
		t.Errorf("argv = %q, want %q", got, want)
	}
	r, err := parseOpen([]byte(`{"throughput_rps": 4999.5, "responses": 25000, "errors": 1,
		"latency": {"p50_ns": 150000, "p99_ns": 2500000, "p99_9_ns": 9000000}, "status": {"200": 25000}}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Throughput != 4999.5 || r.Errors != 1 || r.Latency.P99 != 2500*time.Microsecond {
		t.Errorf("parsed %+v", r)
	}
	o.headers, o.warmup = []string{"x-secret: 1"}, 0
	if got, want := strings.Join(o.argv(), " "), "taskset -c 0 /b/wasmgate bench -o json -q -c 64 --rate 5000 -d 5s --warmup 0s -H x-secret: 1 http://x/64"; got != want {
		t.Errorf("argv with a header = %q, want %q", got, want)
	}
	if _, err := parseOpen([]byte("not json")); err == nil {
		t.Error("want an error for output that is not JSON")
	}
}

func TestReportOpenLoop(t *testing.T) {
	res := testResults()
	res.OpenRate, res.OpenDuration = 5000, "5s"
	for i := range res.Samples {
		res.Samples[i].Open = &openSample{RPS: 5000, Responses: 25000, P50US: 100, P99US: 900 + float64(i), P999US: 2000}
	}
	res.Samples[4].Open = &openSample{Aborted: "every request failed for 2s"}
	md := renderMarkdown(res)
	for _, want := range []string{
		"Latency at a fixed 5,000 req/s",
		"| direct (no proxy) | 5,000 | 100 µs | 901 µs | 2.00 ms | 0 |",
		"| wasmgate | — | — | — | — | — (not run) |",
		"| nginx | 5,000 | 100 µs | 903 µs | 2.00 ms | 0 (and 1 run without a response) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
}
