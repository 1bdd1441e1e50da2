package main

import (
	"math"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestQuartiles(t *testing.T) {
	for _, tt := range []struct {
		in          []float64
		med, lo, hi float64
	}{
		{[]float64{1}, 1, 1, 1},
		{[]float64{4, 1, 3, 2}, 2.5, 1.5, 3.5},
		{[]float64{5, 1, 4, 2, 3}, 3, 2, 4},
	} {
		med, lo, hi := quartiles(tt.in)
		if med != tt.med || lo != tt.lo || hi != tt.hi {
			t.Errorf("quartiles(%v) = %v %v %v, want %v %v %v", tt.in, med, lo, hi, tt.med, tt.lo, tt.hi)
		}
	}
}

// TestPairedRatiosAreTakenPerCycle builds cycles in which the whole
// machine is slow or fast: a proxy 2% faster than nginx in every cycle must
// come out 1.02× whatever the mix of slow and fast cycles, although its own
// median req/s, taken over different cycles, says otherwise.
func TestPairedRatiosAreTakenPerCycle(t *testing.T) {
	res := testResults()
	res.Scenarios = []scenarioInfo{{Name: "wasmgate", Label: "wasmgate"}, {Name: "nginx", Label: "nginx"}, {Name: "haproxy", Label: "HAProxy"}}
	res.PairedCycles, res.PairedDuration, res.PairedWarmup = 5, "2s", "500ms"
	speed := []float64{60000, 75000, 60000, 60000, 75000} // the machine, by cycle
	for c, v := range speed {
		res.Paired = append(res.Paired,
			sample{Scenario: "wasmgate", Payload: "64", Round: c + 1, RPS: v * 1.02, ProxyCPUUSPerReq: 13 * 75000 / v},
			sample{Scenario: "nginx", Payload: "64", Round: c + 1, RPS: v, ProxyCPUUSPerReq: 13.5 * 75000 / v},
		)
		if c != 2 { // HAProxy missed a cycle
			res.Paired = append(res.Paired, sample{Scenario: "haproxy", Payload: "64", Round: c + 1, RPS: v * 0.99, ProxyCPUUSPerReq: 14 * 75000 / v})
		}
	}
	sums := summarizePaired(res, "64", "nginx")
	if len(sums) != 3 {
		t.Fatalf("%d summaries, want 3", len(sums))
	}
	wg, ng, hp := sums[0], sums[1], sums[2]
	if math.Abs(wg.vsBase-1.02) > 1e-9 || math.Abs(wg.vsLo-1.02) > 1e-9 || wg.ahead != 5 || wg.behind != 0 {
		t.Errorf("wasmgate vs nginx = %+v", wg)
	}
	if math.Abs(wg.cpuVs-13/13.5) > 1e-9 {
		t.Errorf("wasmgate CPU vs nginx = %v", wg.cpuVs)
	}
	if ng.vsBase != 1 || ng.cycles != 5 {
		t.Errorf("nginx = %+v", ng)
	}
	if hp.cycles != 4 || hp.ratioed != 4 || math.Abs(hp.vsBase-0.99) > 1e-9 || hp.behind != 4 {
		t.Errorf("HAProxy = %+v", hp)
	}

	md := renderMarkdown(res)
	for _, want := range []string{
		"## HTTP/1.1, paired runs",
		"in each of 5 cycles, each ran a 2s wrk run (after a 500ms warm-up)",
		"| wasmgate | 5 | 61,200 | 16.25 | 1.020× (1.020–1.020) | 5 / 0 | 0.963× (0.963–0.963) |",
		"wasmgate's req/s against each, as the median of per-cycle ratios (quartiles): nginx 1.020× (1.020–1.020; ahead in 5 of 5 cycles); HAProxy 1.030× (1.030–1.030; ahead in 4 of 4 cycles).",
		"| HAProxy | 4 | 66,825 | 15.75 | 0.990× (0.990–0.990) | 0 / 4 |", // its median req/s is over other cycles
	} {
		if !strings.Contains(md, want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
	if strings.Contains(md, "16 KiB response body, paired") {
		t.Error("a payload without paired samples has a paired table")
	}

	res.Paired, res.PairedFailed = nil, "wasmgate: did not answer"
	if md := renderMarkdown(res); !strings.Contains(md, "stopped early**: wasmgate: did not answer") {
		t.Error("a failed paired phase is not reported")
	}
	res.PairedCycles, res.PairedFailed = 0, ""
	if strings.Contains(renderMarkdown(res), "paired runs") {
		t.Error("a run without a paired phase reports one")
	}
}

// pairedFilterResults holds a filters' paired phase of five cycles in
// which the machine is slow or fast by cycle: at saturation hello costs
// 6 µs over no filter and the chain 40 µs, at the fixed rate 3 µs and
// 20 µs; nginx serves twice no filter's req/s at half its CPU per request.
func pairedFilterResults() *results {
	res := groupResults()
	res.Scenarios = append(res.Scenarios[:2:2], scenarioInfo{Name: "nginx", Label: "nginx"})
	for _, s := range scenarios() {
		if s.group == groupFilters {
			res.Scenarios = append(res.Scenarios, scenarioInfo{Name: s.name, Label: s.label, Group: s.group, Peer: s.peer, Base: s.base})
		}
	}
	res.PairedCycles, res.PairedDuration, res.PairedWarmup, res.PairedRate = 5, "2s", "500ms", 5000
	speed := []float64{1, 1.25, 1, 1, 1.25}
	for c, v := range speed {
		cycle := c + 1
		sat := func(name string, rps, cpu float64) {
			res.PairedFilters = append(res.PairedFilters, sample{Scenario: name, Payload: "64", Round: cycle, RPS: rps * v, ProxyCPUUSPerReq: cpu / v, ProxyCPUPct: 99})
		}
		fixed := func(name string, rps, cpu float64) {
			res.PairedFixed = append(res.PairedFixed, sample{Scenario: name, Payload: "64", Round: cycle, RPS: rps, Requests: int64(rps * 2),
				ProxyCPUUSPerReq: cpu / v, ProxyCPUPct: rps * cpu / v / 1e4, P99US: 800})
		}
		sat("filter-none", 30000, 30)
		sat("filter-hello", 25000, 36)
		sat("filter-chain", 12000, 70)
		sat("nginx", 60000, 15)
		fixed("filter-none", 5000, 40)
		fixed("filter-hello", 5000, 43)
		fixed("filter-chain", 4990, 60)
		fixed("nginx", 5000, 20)
	}
	return res
}

// The filters' paired phase takes the filters group, with nginx after it
// when nginx runs, whether the filters run alone or with the default set.
func TestPairedFilterScenarios(t *testing.T) {
	names := func(ss []scenario) string {
		var out []string
		for _, s := range ss {
			out = append(out, s.name)
		}
		return strings.Join(out, ",")
	}
	active := func(list ...string) []scenario {
		want := expandGroups(list)
		var out []scenario
		for _, s := range scenarios() {
			if contains(want, s.name) {
				out = append(out, s)
			}
		}
		return out
	}
	filters := "filter-none,filter-hello,filter-authz,filter-encryption,filter-telemetry,filter-chain"
	for _, tt := range []struct {
		name   string
		active []scenario
		want   string
	}{
		{"filters alone", active(groupFilters), filters},
		{"default set", active(groups...), filters + ",nginx"},
		{"two filter sets and nginx", active("nginx", "filter-chain", "filter-none"), "filter-none,filter-chain,nginx"},
		{"no baseline", active("nginx", "filter-hello", "filter-chain"), ""},
		{"baseline alone", active("filter-none", "nginx"), ""},
		{"http1 only", active(groupHTTP1), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := names(pairedFilterScenarios(tt.active)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	// The http1 phase is unchanged by the filters.
	if got := names(pairedScenarios(active(groups...))); got != "forwarder,wasmgate,nginx,haproxy,caddy" {
		t.Errorf("http1 paired scenarios: %q", got)
	}
}

// The differences of CPU per request are taken within each cycle: a
// filter costing 6 µs in a cycle at full speed and 4.8 µs in a fast one
// gives 6 (4.8 to 6), whatever the base's own median.
func TestPairSummariesDifference(t *testing.T) {
	res := pairedFilterResults()
	sums := pairSummaries(scenariosOf(res, groupFilters), res.PairedFilters, res.PairedCycles, "64", "filter-none")
	if len(sums) != 3 {
		t.Fatalf("%d summaries, want 3 (the sets without samples left out)", len(sums))
	}
	none, hello, chain := sums[0], sums[1], sums[2]
	if none.over != 0 || none.vsBase != 1 || none.cycles != 5 {
		t.Errorf("filter-none = %+v", none)
	}
	if hello.over != 6 || math.Abs(hello.overLo-4.8) > 1e-9 || hello.overHi != 6 {
		t.Errorf("hello over no filter = %v (%v to %v), want 6 (4.8 to 6)", hello.over, hello.overLo, hello.overHi)
	}
	if math.Abs(hello.vsBase-25.0/30) > 1e-9 || hello.behind != 5 || hello.ratioed != 5 {
		t.Errorf("hello vs no filter = %+v", hello)
	}
	if chain.over != 40 || chain.cpuPct != 99 {
		t.Errorf("chain = %+v", chain)
	}
	fixed := pairSummaries(scenariosOf(res, groupFilters), res.PairedFixed, res.PairedCycles, "64", "filter-none")
	if f, _ := findPaired(fixed, "filter-chain"); f.over != 20 || f.rps != 4990 || f.p99 != 800 {
		t.Errorf("chain at the fixed rate = %+v", f)
	}
	// A cycle the base missed is left out of the comparisons only.
	res.PairedFilters = slices.DeleteFunc(res.PairedFilters, func(s sample) bool { return s.Scenario == "filter-none" && s.Round == 2 })
	sums = pairSummaries(scenariosOf(res, groupFilters), res.PairedFilters, res.PairedCycles, "64", "filter-none")
	if h, _ := findPaired(sums, "filter-hello"); h.cycles != 5 || h.ratioed != 4 || math.Abs(h.overLo-5.4) > 1e-9 {
		t.Errorf("hello with a base missing in cycle 2 = %+v", h)
	}
}

// TestPairSummariesBothPasses: a cycle run forward and backward has two
// samples of each proxy, and its figure is their mean, so a drift linear
// over the cycle cancels. Here the machine slows by 2 µs a place over
// four places (none, hello, then hello, none): hello's true 3 µs comes
// out whole, where either pass alone is off by 2.
func TestPairSummariesBothPasses(t *testing.T) {
	scens := []scenarioInfo{{Name: "filter-none", Group: groupFilters}, {Name: "filter-hello", Group: groupFilters}}
	smp := func(name string, pass int, cpu, rps float64, errs int64) sample {
		return sample{Scenario: name, Payload: "64", Round: 1, Pass: pass, ProxyCPUUSPerReq: cpu, RPS: rps, Errors: errs, Requests: 100, ProxyCoreOtherPct: cpu / 10}
	}
	samples := []sample{
		smp("filter-none", 1, 30, 1000, 0), smp("filter-hello", 1, 35, 900, 1),
		smp("filter-hello", 2, 37, 800, 0), smp("filter-none", 2, 36, 1100, 2),
	}
	sums := pairSummaries(scens, samples, 1, "64", "filter-none")
	none, hello := sums[0], sums[1]
	if none.cpu != 33 || none.rps != 1050 || none.errors != 2 || none.cycles != 1 {
		t.Errorf("none = %+v, want the mean of its two runs", none)
	}
	if hello.over != 3 || hello.errors != 1 || hello.others != 3.7 {
		t.Errorf("hello over none %v, errors %d, others %v; want 3, 1, 3.7 (the worse run's)", hello.over, hello.errors, hello.others)
	}
	if math.Abs(hello.vsBase-850.0/1050) > 1e-9 {
		t.Errorf("hello vs none %v, want %v", hello.vsBase, 850.0/1050)
	}
}

func TestFixedSample(t *testing.T) {
	var r openResult
	r.Throughput, r.Responses, r.Errors = 4998, 10000, 2
	r.Latency.P50, r.Latency.P99, r.Latency.P999 = 180*time.Microsecond, 900*time.Microsecond, 3*time.Millisecond
	s := fixedSample(r, 450*time.Millisecond, 2*time.Second)
	if s.RPS != 4998 || s.Requests != 10000 || s.Errors != 2 || s.P50US != 180 || s.P99US != 900 || s.P999US != 3000 {
		t.Errorf("sample = %+v", s)
	}
	if math.Abs(s.ProxyCPUUSPerReq-45) > 1e-9 || math.Abs(s.ProxyCPUPct-22.5) > 1e-9 {
		t.Errorf("proxy CPU = %v µs/req, %v%%; want 45 and 22.5", s.ProxyCPUUSPerReq, s.ProxyCPUPct)
	}
	if s := fixedSample(openResult{Aborted: "down"}, time.Second, 2*time.Second); s.ProxyCPUUSPerReq != 0 || s.RPS != 0 {
		t.Errorf("a run without responses = %+v", s)
	}
}

func TestParseSchedstat(t *testing.T) {
	if ns, err := parseSchedstat([]byte("7959099 576294 2\n")); err != nil || ns != 7959099 {
		t.Errorf("got %d, %v", ns, err)
	}
	for _, bad := range []string{"", "x 1 2"} {
		if _, err := parseSchedstat([]byte(bad)); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

// groupRuntime counts this process's own threads, to the nanosecond: it
// grows by at least the CPU time a busy loop spends.
func TestGroupRuntimeOfThisProcess(t *testing.T) {
	pgrp := ownGroup(t)
	before, err := groupRuntime(pgrp, clockTicks())
	if err != nil {
		t.Fatalf("groupRuntime(own group %d): %v", pgrp, err)
	}
	var ru syscall.Rusage
	cpu := func() time.Duration {
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	for cpu()-start < 30*time.Millisecond {
	}
	after, err := groupRuntime(pgrp, clockTicks())
	if err != nil {
		t.Fatal(err)
	}
	if d := after - before; d < 20*time.Millisecond {
		t.Errorf("runtime grew by %s over a 30ms busy loop", d)
	}
}

func TestReportPairedFilters(t *testing.T) {
	md := renderMarkdown(pairedFilterResults())
	for _, want := range []string{
		"### Wasm filters, paired runs",
		"In this phase the wasmgate of every filter set above, and nginx as in the HTTP/1.1 tables, was started once",
		"in each of 5 cycles, each ran a 2s wrk run (after a 500ms warm-up)",
		"each was sent a fixed 5,000 req/s by `wasmgate bench --rate` (open loop, 64 connections) for 2s after a 500ms warm-up",
		"- **At saturation** (wrk, closed loop)",
		"- **At a fixed rate** (5,000 req/s, below every set's saturation)",
		"| no filter | 5 | 30,000 | 30.00 | 99% | — | — |",
		"| hello (minimal Go filter) | 5 | 25,000 | 36.00 | 99% | 0.833× (0.833–0.833) | +6.00 (+4.80 to +6.00) |",
		"| authz | — | — | — | — | — | — | not run |",
		"| telemetry + authz + encryption (one VM) | 5 | 12,000 | 70.00 | 99% | 0.400× (0.400–0.400) | +40.00 (+32.00 to +40.00) |",
		"| nginx (no filter; reference) | 5 | 60,000 | 15.00 | 99% | — | — |",
		"No filter beside nginx, per cycle: req/s 0.500× nginx's (0.500–0.500; ahead in 0 of 5 cycles), proxy CPU per request 2.000× nginx's (2.000–2.000); " +
			"at the fixed rate, proxy CPU per request 2.000× nginx's (2.000–2.000), a difference of +20.00 µs.",
		"#### At a fixed 5,000 req/s (`wasmgate bench --rate`)",
		"| hello (minimal Go filter) | 5 | 5,000 | 800 µs | 43.00 | 22% | +3.00 (+2.40 to +3.00) | 0 |",
		"| nginx (no filter; reference) | 5 | 5,000 | 800 µs | 20.00 | 10% | — | 0 |",
		"**Targets (issues 4 and 16), judged on these paired runs**",
		"- The minimal Go filter keeps at least 0.8× the no-filter req/s (at saturation, the only throughput measure): **met**, 0.833× (0.833–0.833).",
		"- The minimal Go filter adds at most 5 µs of proxy CPU per request: at the fixed rate (with the wake-ups of an idle proxy) **met**, +3.00 µs (+2.40 to +3.00); " +
			"at saturation (with the kernel time of the lower rate) **not met**, +6.00 µs (+4.80 to +6.00). The two verdicts differ",
		"- The three first-party filters chained add under 25 µs of proxy CPU per request: at the fixed rate (with the wake-ups of an idle proxy) **met**, +20.00 µs",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
	for _, unwanted := range []string{"Target (issue 4), a minimal Go filter costs", "Below the rate", "%!"} {
		if strings.Contains(md, unwanted) {
			t.Errorf("RESULTS.md holds %q", unwanted)
		}
	}
}

func TestReportPairedFiltersVariants(t *testing.T) {
	t.Run("agreeing verdicts", func(t *testing.T) {
		res := pairedFilterResults()
		for i := range res.PairedFilters {
			if s := &res.PairedFilters[i]; s.Scenario == "filter-chain" {
				s.ProxyCPUUSPerReq = s.ProxyCPUUSPerReq * 50 / 70 // 20 over no filter
			}
		}
		md := renderMarkdown(res)
		if !strings.Contains(md, "chained add under 25 µs of proxy CPU per request: at the fixed rate (with the wake-ups of an idle proxy) **met**, +20.00 µs (+16.00 to +20.00); "+
			"at saturation (with the kernel time of the lower rate) **met**, +20.00 µs (+16.00 to +20.00).\n") {
			t.Error("agreeing verdicts are not given side by side without a note")
		}
	})
	t.Run("disturbed", func(t *testing.T) {
		res := pairedFilterResults()
		res.MaxOtherPct = 10
		if strings.Contains(renderMarkdown(res), "disturbed") {
			t.Error("a quiet paired phase is flagged as disturbed")
		}
		for i := range res.PairedFixed {
			if s := &res.PairedFixed[i]; s.Scenario == "filter-hello" {
				s.ProxyCoreOtherPct = float64(20 + s.Round)
			}
		}
		md := renderMarkdown(res)
		for _, want := range []string{
			"| hello (minimal Go filter) | 5 | 5,000 | 800 µs | 43.00 | 22% | +3.00 (+2.40 to +3.00) | 0 | 23% |",
			"**Other work on the machine used more than 10% of a pinned core in the median cycle of hello (minimal Go filter) at the fixed rate: those rows are disturbed.**",
		} {
			if !strings.Contains(md, want) {
				t.Errorf("RESULTS.md lacks %q", want)
			}
		}
	})
	t.Run("a set below the rate", func(t *testing.T) {
		res := pairedFilterResults()
		for i := range res.PairedFixed {
			if s := &res.PairedFixed[i]; s.Scenario == "filter-chain" {
				s.RPS = 4100
			}
		}
		md := renderMarkdown(res)
		for _, want := range []string{
			"**Below the rate**: telemetry + authz + encryption (one VM) (4,100 req/s) did not sustain 5,000 req/s",
			"at the fixed rate (with the wake-ups of an idle proxy) **met**, +20.00 µs (+16.00 to +20.00), but at 4,100 req/s, below the rate (see above);",
		} {
			if !strings.Contains(md, want) {
				t.Errorf("RESULTS.md lacks %q", want)
			}
		}
	})
	t.Run("no fixed rate, no nginx", func(t *testing.T) {
		res := pairedFilterResults()
		res.PairedFixed, res.PairedRate, res.PairedRateSkipped = nil, 0, "disabled (-paired-rate 0)"
		res.PairedFilters = slices.DeleteFunc(res.PairedFilters, func(s sample) bool { return s.Scenario == "nginx" })
		md := renderMarkdown(res)
		for _, want := range []string{
			"- There are no fixed-rate runs in this run (disabled (-paired-rate 0))",
			"nginx was not in this run's paired phase",
			"- The minimal Go filter adds at most 5 µs of proxy CPU per request: at saturation (with the kernel time of the lower rate) **not met**, +6.00 µs (+4.80 to +6.00).\n",
		} {
			if !strings.Contains(md, want) {
				t.Errorf("RESULTS.md lacks %q", want)
			}
		}
		if strings.Contains(md, "At a fixed") || strings.Contains(md, "and nginx as in") {
			t.Error("a run without fixed-rate runs or nginx describes them")
		}
	})
	t.Run("stopped early", func(t *testing.T) {
		res := pairedFilterResults()
		res.PairedFiltersFailed = "cycle 3 filter-chain 64: wrk: exit status 1"
		if md := renderMarkdown(res); !strings.Contains(md, "**The filters' paired phase stopped early**: cycle 3 filter-chain") {
			t.Error("a phase that stopped early is not reported")
		}
	})
	t.Run("failed before measuring", func(t *testing.T) {
		res := pairedFilterResults()
		res.PairedFilters, res.PairedFixed, res.PairedFiltersFailed = nil, nil, "filter-chain: did not answer"
		md := renderMarkdown(res)
		for _, want := range []string{
			"The filters' paired phase failed before it measured anything: filter-chain: did not answer.",
			"Target (issue 4), a minimal Go filter costs at most 5 µs",
			"there was no paired phase of the filters in this run",
		} {
			if !strings.Contains(md, want) {
				t.Errorf("RESULTS.md lacks %q", want)
			}
		}
		if strings.Contains(md, "### Wasm filters, paired runs") {
			t.Error("a paired section without figures")
		}
	})
}
