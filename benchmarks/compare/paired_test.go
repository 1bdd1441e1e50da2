package main

import (
	"math"
	"strings"
	"testing"
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
