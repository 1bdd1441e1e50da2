package main

import (
	"context"
	"fmt"
	"log"
	"slices"
)

// The paired phase answers what the rounds cannot on a machine whose speed
// drifts: which proxy is faster at the same moment. The machine's slow
// spells last tens of seconds, about as long as the gap between two
// proxies' slots in a round, so a round can put one proxy in a slow spell
// and the next in a fast one; medians over rounds then depend on how many
// slow slots each proxy drew. Here every proxied http1 scenario is started
// once, and each cycle runs them back to back for a couple of seconds
// each, in an order rotated by cycle. Two proxies' runs in one cycle are
// seconds apart, so their ratio is taken in one state of the machine, and
// the median of those per-cycle ratios is what the report gives.

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

// runPaired runs the paired phase over the proxied http1 scenarios of
// active and returns its samples, Round being the cycle. It returns what it
// measured before an error along with the error.
func (r *runner) runPaired(ctx context.Context, active []scenario) ([]sample, error) {
	scens := pairedScenarios(active)
	if len(scens) < 2 {
		return nil, nil
	}
	pls := r.payloads()
	targets := make([]string, len(scens))
	procs := make([]*process, len(scens))
	defer func() {
		for _, p := range procs {
			if p != nil {
				r.reg.stop(p)
			}
		}
	}()
	for i, s := range scens {
		p, target, _, err := r.startProxy(ctx, s, s.name+"-paired", pls)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		procs[i], targets[i] = p, target
	}
	log.Printf("paired phase: %d cycles of %s runs (after %s warm-ups) of %d proxies started together on CPU %d",
		r.opt.pairedCycles, r.opt.pairedDur, r.opt.pairedWarmup, len(scens), r.opt.proxyCPU)

	var out []sample
	for cycle := 1; cycle <= r.opt.pairedCycles; cycle++ {
		for _, p := range pls {
			r.waitQuiet(ctx, []int{r.opt.loadCPU, r.opt.proxyCPU})
			for k := range scens {
				i := (k + cycle - 1) % len(scens)
				s := scens[i]
				if err := ctx.Err(); err != nil {
					return out, err
				}
				lr, _ := r.loadFor(s, targets[i], p)
				if r.opt.pairedWarmup > 0 {
					if _, _, err := lr.runFor(ctx, r.opt.pairedWarmup); err != nil {
						return out, fmt.Errorf("cycle %d %s %s warm-up: %w", cycle, s.name, p.Name, err)
					}
				}
				smp, err := r.measure(ctx, lr, r.opt.pairedDur, procs[i])
				if err != nil {
					return out, fmt.Errorf("cycle %d %s %s: %w", cycle, s.name, p.Name, err)
				}
				smp.Scenario, smp.Payload, smp.Round = s.name, p.Name, cycle
				log.Printf("paired %2d %-9s %-4s %9.0f req/s  proxy %6.2f us/req (%3.0f%% CPU)",
					cycle, s.name, p.Name, smp.RPS, smp.ProxyCPUUSPerReq, smp.ProxyCPUPct)
				out = append(out, smp)
			}
		}
	}
	return out, nil
}

// pairedSummary is one scenario's figures in the paired phase for one
// payload: medians over cycles, and medians and quartiles of its per-cycle
// ratios to the base scenario (nginx).
type pairedSummary struct {
	scenario               scenarioInfo
	cycles                 int
	rps, cpu               float64
	vsBase, vsLo, vsHi     float64 // req/s ratio: median, first and third quartiles
	cpuVs, cpuLo, cpuHi    float64 // CPU per request ratio, the same
	hasBase                bool
	ahead, behind, ratioed int // cycles with the ratio above, below 1; cycles compared
}

// summarizePaired returns the paired summaries for payload pl, in the order
// of res.Scenarios, against base.
func summarizePaired(res *results, pl, base string) []pairedSummary {
	type key struct {
		scen  string
		cycle int
	}
	by := map[key]sample{}
	for _, s := range res.Paired {
		if s.Payload == pl {
			by[key{s.Scenario, s.Round}] = s
		}
	}
	var out []pairedSummary
	for _, sc := range res.Scenarios {
		var rps, cpu, vs, cpuVs []float64
		ps := pairedSummary{scenario: sc}
		for cycle := 1; cycle <= res.PairedCycles; cycle++ {
			s, ok := by[key{sc.Name, cycle}]
			if !ok || s.RPS <= 0 {
				continue
			}
			rps, cpu = append(rps, s.RPS), append(cpu, s.ProxyCPUUSPerReq)
			b, ok := by[key{base, cycle}]
			if !ok || b.RPS <= 0 || b.ProxyCPUUSPerReq <= 0 {
				continue
			}
			r := s.RPS / b.RPS
			vs, cpuVs = append(vs, r), append(cpuVs, s.ProxyCPUUSPerReq/b.ProxyCPUUSPerReq)
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
		ps.cycles, ps.rps, ps.cpu = len(rps), median(rps), median(cpu)
		if len(vs) > 0 {
			ps.hasBase, ps.ratioed = true, len(vs)
			ps.vsBase, ps.vsLo, ps.vsHi = quartiles(vs)
			ps.cpuVs, ps.cpuLo, ps.cpuHi = quartiles(cpuVs)
		}
		out = append(out, ps)
	}
	return out
}

// quartiles returns the median and the first and third quartiles of xs
// (medians of its lower and upper halves).
func quartiles(xs []float64) (med, lo, hi float64) {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	return median(s), median(s[:(n+1)/2]), median(s[n/2:])
}
