package main

import (
	"context"
	"fmt"
	"log"
	"path/filepath"
	"slices"
	"time"
)

// The paired phase answers what the rounds cannot on a machine whose speed
// drifts: which proxy is faster at the same moment. The machine's slow
// spells last tens of seconds, about as long as the gap between two
// proxies' slots in a round, so a round can put one proxy in a slow spell
// and the next in a fast one; medians over rounds then depend on how many
// slow slots each proxy drew. Here every proxied http1 scenario is started
// once, and each cycle runs them back to back for a couple of seconds
// each, in an order rotated by cycle, and then again in the reverse
// order. Two proxies' runs in one cycle are seconds apart, so their ratio
// is taken in one state of the machine, and the median of those per-cycle
// ratios is what the report gives.
//
// The reverse pass is there because the machine's speed also drifts within
// a cycle: a run of sustained saturation slows the machine down as it goes
// on (later runs of a cycle dearer, by 1% to 4% per place in two runs of
// the filters' phase), and the lighter fixed-rate runs let it recover
// (later runs cheaper, by up to 4% per place). With one pass, a proxy's
// place relative to its baseline's decides how much of that drift its
// difference carries: a filter set run right after the no-filter
// baseline was charged one place's drift in nearly every cycle, one run
// five places after it was credited two. Run forward and then backward,
// every proxy's two runs average to the same place in the cycle, and a
// cycle's figure for a proxy is the mean of its two runs, so a drift
// that is linear over the cycle falls on every proxy alike.

// The filters group has a paired phase of its own, after the http1 one:
// every filter set's wasmgate, and nginx when it is in the run, started
// together, each cycle running each at saturation with wrk and then, when
// -paired-rate is set, each at that fixed rate with `wasmgate bench`. See
// renderPairedFilters for why both.

// pairedScenarios returns the proxied http1 scenarios among active.
func pairedScenarios(active []scenario) []scenario {
	var out []scenario
	for _, s := range active {
		if s.group == groupHTTP1 && s.argv != nil {
			out = append(out, s)
		}
	}
	return out
}

// pairedFilterScenarios returns the filters group's scenarios among active,
// and nginx's http1 scenario after them when it is active; nil unless
// filter-none and another filter set are active.
func pairedFilterScenarios(active []scenario) []scenario {
	var out []scenario
	var nginx *scenario
	hasBase := false
	for i, s := range active {
		switch {
		case s.group == groupFilters:
			out = append(out, s)
			hasBase = hasBase || s.name == "filter-none"
		case s.group == groupHTTP1 && s.name == "nginx":
			nginx = &active[i]
		}
	}
	if !hasBase || len(out) < 2 {
		return nil
	}
	if nginx != nil {
		out = append(out, *nginx)
	}
	return out
}

// pairedMeshScenarios returns the mesh group's scenarios among active; nil
// unless the sidecars and another pair are active.
func pairedMeshScenarios(active []scenario) []scenario {
	var out []scenario
	hasSidecars := false
	for _, s := range active {
		if s.group == groupMesh {
			out = append(out, s)
			hasSidecars = hasSidecars || s.name == "mesh-sidecars"
		}
	}
	if !hasSidecars || len(out) < 2 {
		return nil
	}
	return out
}

// runPairedMesh runs the mesh group's paired phase over active, on the
// first payload, as runPairedFilters does the filters'.
func (r *runner) runPairedMesh(ctx context.Context, active []scenario, rate float64) (sat, fixed []sample, err error) {
	scens := pairedMeshScenarios(active)
	if scens == nil {
		return nil, nil, nil
	}
	return r.runPhase(ctx, pairedPhase{what: "mesh", scens: scens, pls: r.payloads()[:1], headers: []string{"Host: " + meshHost}, rate: rate})
}

// pairedPhase is one paired phase: the scenarios started together, and
// what each cycle runs.
type pairedPhase struct {
	what  string // for the log
	scens []scenario
	pls   []payload
	// headers, when set, are sent with every request of the phase, by wrk
	// and by bench, whatever the scenario's group.
	headers []string
	// rate, when positive, ends every cycle with a run of each scenario at
	// this fixed rate (for every payload), measured as the wrk runs are.
	rate float64
}

// runPaired runs the paired phase over the proxied http1 scenarios of
// active and returns its samples, Round being the cycle. It returns what it
// measured before an error along with the error.
func (r *runner) runPaired(ctx context.Context, active []scenario) ([]sample, error) {
	scens := pairedScenarios(active)
	if len(scens) < 2 {
		return nil, nil
	}
	sat, _, err := r.runPhase(ctx, pairedPhase{what: "http1", scens: scens, pls: r.payloads()})
	return sat, err
}

// runPairedFilters runs the filters' paired phase over active, on the
// first payload, and returns the samples at saturation and at the fixed
// rate (none when rate is 0), Round being the cycle. It returns what it
// measured before an error along with the error.
func (r *runner) runPairedFilters(ctx context.Context, active []scenario, rate float64) (sat, fixed []sample, err error) {
	scens := pairedFilterScenarios(active)
	if scens == nil {
		return nil, nil, nil
	}
	return r.runPhase(ctx, pairedPhase{what: "filters", scens: scens, pls: r.payloads()[:1], headers: []string{filterHeader}, rate: rate})
}

// runPhase starts every scenario of ph, then runs its cycles.
func (r *runner) runPhase(ctx context.Context, ph pairedPhase) (sat, fixed []sample, err error) {
	targets := make([]string, len(ph.scens))
	procs := make([]*process, len(ph.scens))
	defer func() {
		for _, p := range procs {
			if p != nil {
				r.reg.stop(p)
			}
		}
	}()
	for i, s := range ph.scens {
		p, target, _, err := r.startProxy(ctx, s, s.name+"-paired-"+ph.what, ph.pls)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", s.name, err)
		}
		procs[i], targets[i] = p, target
	}
	fixedNote := ""
	if ph.rate > 0 {
		fixedNote = fmt.Sprintf(", then each at a fixed %.0f req/s", ph.rate)
	}
	log.Printf("paired phase (%s): %d cycles of %s runs (after %s warm-ups) of %d proxies started together on CPU %d%s",
		ph.what, r.opt.pairedCycles, r.opt.pairedDur, r.opt.pairedWarmup, len(ph.scens), r.opt.proxyCPU, fixedNote)

	// order returns the index of the k-th scenario to run in cycle: the
	// rotated order, then the same reversed (see above); pass is 1 or 2.
	n := len(ph.scens)
	runs := n
	if r.opt.pairedMirror {
		runs = 2 * n
	}
	order := func(k, cycle int) (i, pass int) {
		if k >= n {
			return (2*n - 1 - k + cycle - 1) % n, 2
		}
		return (k + cycle - 1) % n, 1
	}
	for cycle := 1; cycle <= r.opt.pairedCycles; cycle++ {
		for _, p := range ph.pls {
			r.waitQuiet(ctx, []int{r.opt.loadCPU, r.opt.proxyCPU})
			for k := range runs {
				i, pass := order(k, cycle)
				s := ph.scens[i]
				if err := ctx.Err(); err != nil {
					return sat, fixed, err
				}
				lr, _ := r.loadFor(s, targets[i], p)
				if w, ok := lr.(wrkRun); ok && ph.headers != nil {
					w.headers = ph.headers
					lr = w
				}
				if r.opt.pairedWarmup > 0 {
					if _, _, err := lr.runFor(ctx, r.opt.pairedWarmup); err != nil {
						return sat, fixed, fmt.Errorf("cycle %d %s %s warm-up: %w", cycle, s.name, p.Name, err)
					}
				}
				smp, err := r.measure(ctx, lr, r.opt.pairedDur, procs[i])
				if err != nil {
					return sat, fixed, fmt.Errorf("cycle %d %s %s: %w", cycle, s.name, p.Name, err)
				}
				smp.Scenario, smp.Payload, smp.Round, smp.Pass = s.name, p.Name, cycle, pass
				log.Printf("paired %2d.%d %-17s %-4s %9.0f req/s  proxy %6.2f us/req (%3.0f%% CPU)",
					cycle, pass, s.name, p.Name, smp.RPS, smp.ProxyCPUUSPerReq, smp.ProxyCPUPct)
				sat = append(sat, smp)
			}
		}
		if ph.rate <= 0 {
			continue
		}
		for _, p := range ph.pls {
			r.waitQuiet(ctx, []int{r.opt.loadCPU, r.opt.proxyCPU})
			for k := range runs {
				i, pass := order(k, cycle)
				s := ph.scens[i]
				if err := ctx.Err(); err != nil {
					return sat, fixed, err
				}
				smp, err := r.measureFixed(ctx, ph, s, targets[i], p, procs[i], cycle, pass)
				if err != nil {
					return sat, fixed, fmt.Errorf("cycle %d %s %s at %.0f req/s: %w", cycle, s.name, p.Name, ph.rate, err)
				}
				log.Printf("paired %2d.%d %-17s %-4s at %.0f req/s: %9.0f req/s  proxy %6.2f us/req (%3.0f%% CPU)  p99 %s  errors %d",
					cycle, pass, s.name, p.Name, ph.rate, smp.RPS, smp.ProxyCPUUSPerReq, smp.ProxyCPUPct, latency(float64(smp.P99US)), smp.Errors)
				fixed = append(fixed, smp)
			}
		}
	}
	return sat, fixed, nil
}

// measureFixed sends scenario s ph.rate requests a second with `wasmgate
// bench`: an unmeasured run of -paired-warmup, then a measured one of
// -paired-duration, around which it reads the proxy's CPU time to the
// nanosecond. The sample's RPS is the rate achieved, Requests the
// responses, ProxyCPUPct the proxy's share of a core over the measured
// length.
func (r *runner) measureFixed(ctx context.Context, ph pairedPhase, s scenario, target string, p payload, proxy *process, cycle, pass int) (sample, error) {
	o := openRun{
		bin:         r.binPath("wasmgate"),
		cpu:         r.opt.loadCPU,
		nice:        r.opt.nice,
		connections: r.opt.connections,
		rate:        ph.rate,
		url:         "http://" + target + p.Path,
		headers:     ph.headers,
	}
	if r.opt.pairedWarmup > 0 {
		w := o
		w.duration = r.opt.pairedWarmup
		if _, _, err := w.run(ctx); err != nil {
			return sample{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	o.duration = r.opt.pairedDur
	o.saveTo = filepath.Join(r.opt.scratch, fmt.Sprintf("paired-%s-%s-%s-cycle%d.%d.json", ph.what, s.name, p.Name, cycle, pass))
	pid := proxy.cmd.Process.Pid
	before, err := groupRuntime(pid, r.hz)
	if err != nil {
		return sample{}, fmt.Errorf("proxy CPU time: %w", err)
	}
	start := time.Now()
	var res openResult
	var benchCPU time.Duration
	m, err := r.around(func() (err error) {
		res, benchCPU, err = o.run(ctx)
		return err
	})
	if err != nil {
		return sample{}, err
	}
	wall := time.Since(start)
	after, err := groupRuntime(pid, r.hz)
	if err != nil {
		return sample{}, fmt.Errorf("proxy CPU time: %w", err)
	}
	smp := fixedSample(res, after-before, o.duration)
	smp.Scenario, smp.Payload, smp.Round, smp.Pass, smp.WallS, smp.Attempts = s.name, p.Name, cycle, pass, wall.Seconds(), 1

	// The cores over the whole bench process, as measure reads them
	// around a wrk run, in clock ticks.
	hz := float64(r.hz)
	m.fill(&smp, (after-before).Seconds()*hz, benchCPU.Seconds()*hz, res.Responses, hz)
	return smp, nil
}

// fixedSample turns a fixed-rate run's report and the proxy's CPU time
// over it into a sample.
func fixedSample(res openResult, cpu, measured time.Duration) sample {
	s := sample{
		RPS:      res.Throughput,
		Requests: res.Responses,
		Errors:   res.Errors,
		P50US:    res.Latency.P50.Microseconds(),
		P99US:    res.Latency.P99.Microseconds(),
		P999US:   res.Latency.P999.Microseconds(),
	}
	if res.Responses > 0 {
		s.ProxyCPUUSPerReq = float64(cpu.Nanoseconds()) / 1e3 / float64(res.Responses)
	}
	if measured > 0 {
		s.ProxyCPUPct = 100 * cpu.Seconds() / measured.Seconds()
	}
	return s
}

// pairedSummary is one scenario's figures in a paired phase for one
// payload: medians over cycles, and medians and quartiles of its per-cycle
// comparisons with a base scenario (nginx, or filter-none).
type pairedSummary struct {
	scenario               scenarioInfo
	cycles                 int
	rps, cpu, cpuPct, p99  float64 // medians over cycles; p99 in µs
	cpuQ1, cpuQ3           float64 // quartiles over cycles of the CPU per request
	others                 float64 // median share of a pinned core used by other processes
	errors                 int64   // over cycles
	vsBase, vsLo, vsHi     float64 // req/s ratio: median, first and third quartiles
	cpuVs, cpuLo, cpuHi    float64 // CPU per request ratio, the same
	over, overLo, overHi   float64 // CPU per request minus the base's, µs, the same
	hasBase                bool
	ahead, behind, ratioed int // cycles with the ratio above, below 1; cycles compared
}

// summarizePaired returns the summaries of the http1 paired phase for
// payload pl, in the order of res.Scenarios, against base.
func summarizePaired(res *results, pl, base string) []pairedSummary {
	return pairSummaries(res.Scenarios, res.Paired, res.PairedCycles, pl, base)
}

// pairSummaries returns the summaries of samples, a paired phase of cycles
// whose Round is the cycle, for payload pl, in the order of scens (those
// without samples left out), against base. A scenario's comparisons are
// taken within each cycle in which both it and base have figures.
func pairSummaries(scens []scenarioInfo, samples []sample, cycles int, pl, base string) []pairedSummary {
	type key struct {
		scen  string
		cycle int
	}
	by := map[key]sample{}
	for _, s := range samples {
		if s.Payload != pl {
			continue
		}
		k := key{s.Scenario, s.Round}
		if first, ok := by[k]; ok {
			s = bothPasses(first, s)
		}
		by[k] = s
	}
	var out []pairedSummary
	for _, sc := range scens {
		var rps, cpu, pct, p99, oth, vs, cpuVs, over []float64
		ps := pairedSummary{scenario: sc}
		for cycle := 1; cycle <= cycles; cycle++ {
			s, ok := by[key{sc.Name, cycle}]
			if !ok || s.RPS <= 0 {
				continue
			}
			rps, cpu, pct, p99 = append(rps, s.RPS), append(cpu, s.ProxyCPUUSPerReq), append(pct, s.ProxyCPUPct), append(p99, float64(s.P99US))
			oth = append(oth, s.interference())
			ps.errors += s.Errors
			b, ok := by[key{base, cycle}]
			if !ok || b.RPS <= 0 || b.ProxyCPUUSPerReq <= 0 {
				continue
			}
			r := s.RPS / b.RPS
			vs, cpuVs = append(vs, r), append(cpuVs, s.ProxyCPUUSPerReq/b.ProxyCPUUSPerReq)
			over = append(over, s.ProxyCPUUSPerReq-b.ProxyCPUUSPerReq)
			switch {
			case r > 1:
				ps.ahead++
			case r < 1:
				ps.behind++
			}
		}
		if len(rps) == 0 {
			continue
		}
		ps.cycles, ps.rps, ps.cpuPct, ps.p99, ps.others = len(rps), median(rps), median(pct), median(p99), median(oth)
		ps.cpu, ps.cpuQ1, ps.cpuQ3 = quartiles(cpu)
		if len(vs) > 0 {
			ps.hasBase, ps.ratioed = true, len(vs)
			ps.vsBase, ps.vsLo, ps.vsHi = quartiles(vs)
			ps.cpuVs, ps.cpuLo, ps.cpuHi = quartiles(cpuVs)
			ps.over, ps.overLo, ps.overHi = quartiles(over)
		}
		out = append(out, ps)
	}
	return out
}

// bothPasses is a proxy's figure in a cycle run forward and backward: the
// mean of its two runs, which, run for equal lengths at places that
// average to the cycle's middle, cancels a drift that is linear over the
// cycle. Counts add up; the interference is the worse run's.
func bothPasses(a, b sample) sample {
	if a.RPS <= 0 {
		return b
	}
	if b.RPS <= 0 {
		return a
	}
	m := a
	m.Pass = 0
	m.RPS = (a.RPS + b.RPS) / 2
	m.ProxyCPUUSPerReq = (a.ProxyCPUUSPerReq + b.ProxyCPUUSPerReq) / 2
	m.ProxyCPUPct = (a.ProxyCPUPct + b.ProxyCPUPct) / 2
	m.P99US = (a.P99US + b.P99US) / 2
	m.Requests, m.Errors = a.Requests+b.Requests, a.Errors+b.Errors
	m.LoadCoreOtherPct = max(a.LoadCoreOtherPct, b.LoadCoreOtherPct)
	m.ProxyCoreOtherPct = max(a.ProxyCoreOtherPct, b.ProxyCoreOtherPct)
	return m
}

// findPaired returns the summary of the named scenario.
func findPaired(sums []pairedSummary, name string) (pairedSummary, bool) {
	for _, s := range sums {
		if s.scenario.Name == name {
			return s, true
		}
	}
	return pairedSummary{}, false
}

// quartiles returns the median and the first and third quartiles of xs
// (medians of its lower and upper halves).
func quartiles(xs []float64) (med, lo, hi float64) {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	return median(s), median(s[:(n+1)/2]), median(s[n/2:])
}
