package main

import (
	"fmt"
	"html"
	"strings"
)

// Targets of the groups other than http1, as the report states them.
const (
	helloCPUBudgetUS = 5.0  // a minimal Go filter adds at most this proxy CPU per request
	helloMinRatio    = 0.8  // and keeps at least this share of the no-filter req/s
	chainCPUBudgetUS = 25.0 // the three first-party filters chained add less than this
	h2MinVsNginx     = 1.0  // wasmgate's h2 req/s, as a share of nginx's
	h3MinVsCaddy     = 1.2  // wasmgate's h3 req/s, as a share of Caddy's
)

// groupPayload returns the payload the groups other than http1 measured.
func groupPayload(res *results) (payload, bool) {
	for _, s := range res.Samples {
		if sc := scenarioByName(res, s.Scenario); sc != nil && sc.group() != groupHTTP1 {
			for _, p := range res.Payloads {
				if p.Name == s.Payload {
					return p, true
				}
			}
		}
	}
	return payload{}, false
}

func scenarioByName(res *results, name string) *scenarioInfo {
	for i := range res.Scenarios {
		if res.Scenarios[i].Name == name {
			return &res.Scenarios[i]
		}
	}
	return nil
}

// findSummary returns the summary of the named scenario, if it has figures.
func findSummary(sums []summary, name string) (summary, bool) {
	for _, s := range sums {
		if s.scenario.Name == name && s.hasFigures {
			return s, true
		}
	}
	return summary{}, false
}

func metOrNot(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

// cpuCell is a summary's proxy CPU per request and share of a core.
func cpuCells(s summary) (string, string) {
	return fmt.Sprintf("%.2f", s.cpuPerReq), fmt.Sprintf("%.0f%%", s.cpuPct)
}

func latencyOrDash(us float64) string {
	if us <= 0 {
		return "—"
	}
	return latency(us)
}

// renderGroups writes the sections of the groups other than http1.
func renderGroups(w func(string, ...any), res *results) {
	pl, ok := groupPayload(res)
	if !ok {
		return
	}
	has := func(g string) bool { return len(scenariosOf(res, g)) > 0 }
	common := fmt.Sprintf("median over %s of a %s run after a %s warm-up, %s response body, the proxy alone on CPU %d, the load generator and the upstream on CPU %d",
		plural(res.Rounds, "round"), orDash(res.GroupDuration), orDash(res.GroupWarmup), pl.Label, res.ProxyCPU, res.LoadCPU)
	notRunRow := func(label string, cols int) {
		w("| %s |%s not run |\n", label, strings.Repeat(" — |", cols-2))
	}

	if has(groupFilters) {
		sums := summarize(res, groupFilters, pl.Name)
		w("## Wasm filters (HTTP/1.1)\n\n")
		w("wasmgate with the same listener, cluster and route as above, and Wasm filters attached to the route; %s. "+
			"wrk, %d connections, keep-alive; every request, in every row, carries `%s`, the header the encryption filter seals.\n\n",
			common, res.Connections, filterHeader)
		w("| filters on the route | req/s | p50 | p99 | proxy CPU µs/req | proxy CPU | req/s vs no filter | proxy CPU µs/req over no filter | errors | others' CPU |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, s := range sums {
			if !s.hasFigures {
				notRunRow(s.scenario.Label, 10)
				continue
			}
			cpu, pct := cpuCells(s)
			over := "—"
			if s.hasBase && s.scenario.Name != s.scenario.Base {
				over = fmt.Sprintf("%+.2f", s.cpuOverBase)
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %d | %.0f%% |\n", s.scenario.Label, thousands(s.rps), latency(s.p50), latency(s.p99),
				cpu, pct, ratio(s.vsBase), over, s.errors, s.others)
		}
		w("\nFilter configurations (`config` of each plugin; `hello` is `sdk/examples/hello` built with `wasmgate plugin build`, the others are the modules embedded in the binary, written out with `wasmgate plugin extract`):\n\n")
		for _, name := range []string{"hello", "authz", "encryption", "telemetry"} {
			w("- **%s**: `%s`\n", name, filterConfigs[name])
		}
		w("\n")
		// With a paired phase of the filters, the targets are judged on it.
		paired := renderPairedFilters(w, res, pl)
		if h, ok := findSummary(sums, "filter-hello"); !paired && ok && h.hasBase {
			met := h.cpuOverBase <= helloCPUBudgetUS && h.vsBase >= helloMinRatio
			w("Target (issue 4), a minimal Go filter costs at most %.0f µs of proxy CPU per request and keeps at least %.1f× the no-filter throughput: %s. "+
				"The hello filter adds %.2f µs of proxy CPU per request (%s the budget) and keeps %.2f× the no-filter req/s (%s %.1f×).",
				helloCPUBudgetUS, helloMinRatio, metOrNot(met), h.cpuOverBase, overUnder(h.cpuOverBase <= helloCPUBudgetUS, "within", "over"),
				h.vsBase, overUnder(h.vsBase >= helloMinRatio, "at least", "below"), helloMinRatio)
			if base, ok := findSummary(sums, "filter-none"); ok && base.cpuPct < 95 {
				w(" The no-filter run used %.0f%% of its core: its req/s is bounded by the load core, so the throughput ratio understates what the filter costs at the proxy's own saturation; the CPU time per request does not.", base.cpuPct)
			}
			if c, ok := findSummary(sums, "filter-chain"); ok && c.hasBase {
				w(" Target (issue 16), the three first-party filters chained add under %.0f µs of proxy CPU per request: %s, %+.2f µs.",
					chainCPUBudgetUS, metOrNot(c.cpuOverBase < chainCPUBudgetUS), c.cpuOverBase)
			}
			w(" These are medians over rounds at saturation; there was no paired phase of the filters in this run.\n\n")
		} else if !paired {
			w("Target (issue 4): **not measured** (the hello or the no-filter scenario has no figures).\n\n")
		}
	}

	if has(groupHTTPS) {
		sums := summarize(res, groupHTTPS, pl.Name)
		w("## HTTPS: HTTP/1.1 and HTTP/2 over TLS\n\n")
		w("Each proxy terminates TLS (TLS 1.2 and 1.3 offered, h2 and http/1.1 by ALPN) with the same self-signed ECDSA P-256 certificate, made by the suite for the run, "+
			"and forwards over cleartext HTTP/1.1 keep-alive; %s. "+
			"HTTP/1.1 + TLS: wrk, %d connections, keep-alive. HTTP/2 + TLS: h2load, %d connections × %d concurrent streams; h2load prints no percentiles, only the mean latency.\n\n",
			common, res.Connections, res.Connections, res.H2Streams)
		w("| proxy, protocol | req/s | p50 | p99 | mean | proxy CPU µs/req | proxy CPU | req/s vs nginx | CPU/req vs nginx | errors | others' CPU |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, s := range sums {
			if !s.hasFigures {
				notRunRow(s.scenario.Label, 11)
				continue
			}
			cpu, pct := cpuCells(s)
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %.0f%% |\n", s.scenario.Label, thousands(s.rps),
				latencyOrDash(s.p50), latencyOrDash(s.p99), latencyOrDash(s.mean), cpu, pct, ratio(s.vsBase), cpuRatio(sums, s), s.errors+s.non2xx, s.others)
		}
		w("\n")
		wg, ok1 := findSummary(sums, "h2-wasmgate")
		ng, ok2 := findSummary(sums, "h2-nginx")
		if ok1 && ok2 {
			w("Target (issue 6), HTTP/2 throughput at least nginx's with the same cores: %s. wasmgate %s req/s, nginx %s req/s: %.2f×.\n\n",
				metOrNot(wg.vsBase >= h2MinVsNginx), thousands(wg.rps), thousands(ng.rps), wg.vsBase)
		} else {
			w("Target (issue 6), HTTP/2 throughput at least nginx's: **not measured** (wasmgate's or nginx's h2 scenario has no figures).\n\n")
		}
	}

	if has(groupH3) {
		sums := summarize(res, groupH3, pl.Name)
		w("## HTTP/3\n\n")
		w("wasmgate and Caddy, both on quic-go, serving HTTP/3 with the same certificate and forwarding over HTTP/1.1; %s. "+
			"Load: `wasmgate bench -p h3 -k`, closed loop, %d connections × %d concurrent streams, the same for both.\n\n",
			common, res.H3Connections, res.H3Streams)
		w("| proxy | req/s | p50 | p99 | proxy CPU µs/req | proxy CPU | req/s vs Caddy | CPU/req vs Caddy | errors | others' CPU |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, s := range sums {
			if !s.hasFigures {
				notRunRow(s.scenario.Label, 10)
				continue
			}
			cpu, pct := cpuCells(s)
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %d | %.0f%% |\n", s.scenario.Label, thousands(s.rps),
				latency(s.p50), latency(s.p99), cpu, pct, ratio(s.vsBase), cpuRatio(sums, s), s.errors, s.others)
		}
		w("\n")
		if wg, ok := findSummary(sums, "h3-wasmgate"); ok && wg.hasBase {
			cd, _ := findSummary(sums, "h3-caddy")
			w("Target (issue 6), HTTP/3 throughput at least %.1f× Caddy's: %s. wasmgate %s req/s, Caddy %s req/s: %.2f×.",
				h3MinVsCaddy, metOrNot(wg.vsBase >= h3MinVsCaddy), thousands(wg.rps), thousands(cd.rps), wg.vsBase)
			if wg.cpuPct < 95 {
				w(" wasmgate used %.0f%% of its core: the load generator's core was the bound, so the ratio of CPU time per request (%s) is the fairer comparison.", wg.cpuPct, cpuRatio(sums, wg))
			}
			w("\n\n")
		} else {
			w("Target (issue 6), HTTP/3 throughput at least 1.2× Caddy's: **not measured** (wasmgate's or Caddy's h3 scenario has no figures).\n\n")
		}
	}

	if has(groupReload) {
		sums := summarize(res, groupReload, pl.Name)
		w("## Reload under load\n\n")
		w("wasmgate on the HTTP/1.1 configuration above, while the suite rewrites its configuration file every %s for the whole wrk run, warm-up included, "+
			"alternating two valid configurations (the route's name differs) by writing a temporary file and renaming it over the watched one; "+
			"beside the same without rewrites; %s. wrk, %d connections, with `wrk/count.lua`, which counts non-2xx answers in a `response()` callback "+
			"(that slows wrk down, the same in both rows: compare these rows with each other, not with the tables above).\n\n",
			orDash(res.ReloadInterval), common, res.Connections)
		w("| scenario | req/s | p50 | p99 | proxy CPU µs/req | proxy CPU | req/s vs no reload | rewrites | reloads logged | wrk errors | non-2xx | others' CPU |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, s := range sums {
			if !s.hasFigures {
				notRunRow(s.scenario.Label, 12)
				continue
			}
			cpu, pct := cpuCells(s)
			w("| %s | %s | %s | %s | %s | %s | %s | %d | %d | %d | %d | %.0f%% |\n", s.scenario.Label, thousands(s.rps),
				latency(s.p50), latency(s.p99), cpu, pct, ratio(s.vsBase), s.rewrites, s.reloads, s.errors, s.non2xx, s.others)
		}
		w("\nRewrites, reloads, errors and non-2xx are totals over the rounds; **wrk errors** are socket errors, timeouts and 4xx/5xx as wrk counts them; " +
			"**reloads logged** counts wasmgate's `configuration reloaded` lines (the file watcher coalesces changes that come within 50 ms).\n\n")
		if on, ok := findSummary(sums, "reload-on"); ok {
			failed := on.errors + on.non2xx
			w("Reload under load (issue 8): **%d failed requests** over %d rewrites of the configuration; req/s %s the no-reload run's.\n\n",
				failed, on.rewrites, ratio(on.vsBase))
		}
	}

	if has(groupMesh) {
		renderMesh(w, res, pl, common)
	}
}

// renderPairedFilters writes the filters' paired phase and judges the
// filters' targets on it; it writes nothing and returns false when the run
// has no paired figures of filter-none and another filter set.
func renderPairedFilters(w func(string, ...any), res *results, pl payload) bool {
	var scens []scenarioInfo // the filter sets, then nginx
	var nginx *scenarioInfo
	for i, sc := range res.Scenarios {
		switch {
		case sc.group() == groupFilters:
			scens = append(scens, sc)
		case sc.Name == "nginx":
			nginx = &res.Scenarios[i]
		}
	}
	sat := pairSummaries(scens, res.PairedFilters, res.PairedCycles, pl.Name, "filter-none")
	if _, ok := findPaired(sat, "filter-none"); !ok || len(sat) < 2 {
		if res.PairedFiltersFailed != "" {
			w("The filters' paired phase failed before it measured anything: %s.\n\n", oneLine(res.PairedFiltersFailed, 400))
		}
		return false
	}
	fixed := pairSummaries(scens, res.PairedFixed, res.PairedCycles, pl.Name, "filter-none")
	var ngSat, ngFixed []pairedSummary // nginx against filter-none
	if nginx != nil {
		ngSat = pairSummaries([]scenarioInfo{*nginx}, res.PairedFilters, res.PairedCycles, pl.Name, "filter-none")
		ngFixed = pairSummaries([]scenarioInfo{*nginx}, res.PairedFixed, res.PairedCycles, pl.Name, "filter-none")
	}
	hasFixed := len(fixed) > 0
	rate := thousands(res.PairedRate)

	w("### Wasm filters, paired runs\n\n")
	others := ""
	if len(ngSat) > 0 {
		others = ", and nginx as in the HTTP/1.1 tables,"
	}
	w("The rounds above measure the filter sets minutes apart, each in whatever state the machine was then. In this phase the wasmgate of every filter set above%s "+
		"was started once, all together, each pinned to CPU %d; then, in each of %s, each ran a %s wrk run (after a %s warm-up) back to back with the others, "+
		"%s",
		others, res.ProxyCPU, plural(res.PairedCycles, "cycle"), res.PairedDuration, res.PairedWarmup, pairedOrder(res))
	if hasFixed {
		again := "again back to back and rotated"
		if res.PairedMirror {
			again = "again back to back, forward and backward"
		}
		w(", and then each was sent a fixed %s req/s by `wasmgate bench --rate` (open loop, %d connections) for %s after a %s warm-up at that rate, %s",
			rate, res.Connections, res.PairedDuration, res.PairedWarmup, again)
	}
	w(". Every request, nginx's included, carries `%s`. Figures are medians over cycles; ratios and differences are taken within each cycle, between runs seconds apart, "+
		"and given as the median over cycles with the first and third quartiles.\n\n", filterHeader)
	if res.PairedFiltersFailed != "" {
		w("**The filters' paired phase stopped early**: %s. The figures below are over the cycles it finished.\n\n", oneLine(res.PairedFiltersFailed, 400))
	}
	w("Two measures of what the filters cost, and why both:\n\n")
	w("- **At saturation** (wrk, closed loop) every set runs as fast as it can: **req/s vs no filter** is the throughput the target is about. " +
		"But its **proxy CPU µs/req over no filter** is not the filters' work alone. A slower set serves fewer requests a second, so the load core (wrk and the upstream) " +
		"more often waits idle for the proxy, and the proxy pays, in kernel time, for waking it; on a paravirtualised machine a wake-up is dear " +
		"(on the 2-core VM of the committed results, a profile of the proxy under the chain at saturation, taken when this method was chosen, found about 16%% of its CPU under the socket wake-up, in the hypervisor's interrupt-enable path). That kernel time per request grows as the rate falls, so the saturated " +
		"difference over no filter overstates the filters' own cost, the more so the slower the set.\n")
	if hasFixed {
		w("- **At a fixed rate** (%s req/s, below every set's saturation) every set serves the same requests a second. That was meant to make the kernel's work per request "+
			"the same in every row, so that the difference over no filter would be the filters' own work. On a paravirtualised machine it does not: "+
			"between requests the proxy and the load core sleep, and every request pays to wake both", rate)
		if len(ngSat) > 0 && len(ngFixed) > 0 && ngSat[0].cpu > 0 {
			w(" (nginx's CPU per request at the fixed rate is %.2f× its saturated figure in this run)", ngFixed[0].cpu/ngSat[0].cpu)
		}
		w(". The price of a wake-up is not the same in every row: a proxy that holds each request longer finds the other core idle, and deeper asleep, more often, " +
			"and the filters' guest code runs with caches cooled by the idle time between requests (on the 2-core VM of the committed results, a profile of the proxy " +
			"under the chain at 5,000 req/s found 24 µs per request in guest code, against 10 µs for the same filters in-process, and 32 µs in the request's two sends). " +
			"So the fixed-rate difference over no filter overstates the filters' own work too, with a bias of its own. " +
			"The absolute CPU per request differs from the saturated table's in every row: compare the differences over no filter across the two tables, not the absolute figures. " +
			"The filters' own work, with no socket and no idle time in the way, is measured in-process (COMPONENTS.md, `BenchmarkFirstPartyFilters`).\n\n")
	} else {
		w("- There are no fixed-rate runs in this run (%s), so the CPU cost below is the saturated one only, with the bias above.\n\n", orDash(res.PairedRateSkipped))
	}

	var disturbed []string
	for _, m := range []struct {
		sums []pairedSummary
		how  string
	}{{sat, "at saturation"}, {fixed, "at the fixed rate"}, {ngSat, "at saturation"}, {ngFixed, "at the fixed rate"}} {
		for _, s := range m.sums {
			if s.others > res.MaxOtherPct {
				disturbed = append(disturbed, s.scenario.Label+" "+m.how)
			}
		}
	}
	if len(disturbed) > 0 {
		w("**Other work on the machine used more than %.0f%% of a pinned core in the median cycle of %s: those rows are disturbed.**\n\n",
			res.MaxOtherPct, strings.Join(disturbed, ", "))
	}

	w("#### At saturation (wrk)\n\n")
	w("| filters on the route | cycles | req/s | proxy CPU µs/req | proxy CPU | req/s vs no filter (quartiles) | proxy CPU µs/req over no filter (quartiles) | others' CPU |\n")
	w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	row := func(s pairedSummary, label string) {
		vs, over := "—", "—"
		if s.hasBase && s.scenario.Name != "filter-none" && s.scenario.Group == groupFilters {
			vs = fmt.Sprintf("%.3f× (%.3f–%.3f)", s.vsBase, s.vsLo, s.vsHi)
			over = fmt.Sprintf("%+.2f (%+.2f to %+.2f)", s.over, s.overLo, s.overHi)
		}
		w("| %s | %d | %s | %.2f | %.0f%% | %s | %s | %.0f%% |\n", label, s.cycles, thousands(s.rps), s.cpu, s.cpuPct, vs, over, s.others)
	}
	for _, sc := range scens {
		if s, ok := findPaired(sat, sc.Name); ok {
			row(s, sc.Label)
		} else {
			w("| %s | — | — | — | — | — | — | not run |\n", sc.Label)
		}
	}
	for _, s := range ngSat {
		row(s, "nginx (no filter; reference)")
	}
	w("\n")
	if len(ngSat) > 0 && ngSat[0].hasBase {
		n := ngSat[0]
		// n compares nginx with filter-none; the sentence gives filter-none against nginx.
		vsLo, vsHi := 1/n.vsHi, 1/n.vsLo
		w("No filter beside nginx, per cycle: req/s %.3f× nginx's (%.3f–%.3f; ahead in %d of %d cycles), proxy CPU per request %.3f× nginx's (%.3f–%.3f)",
			1/n.vsBase, vsLo, vsHi, n.behind, n.ratioed, 1/n.cpuVs, 1/n.cpuHi, 1/n.cpuLo)
		if len(ngFixed) > 0 && ngFixed[0].hasBase {
			f := ngFixed[0]
			w("; at the fixed rate, proxy CPU per request %.3f× nginx's (%.3f–%.3f), a difference of %+.2f µs", 1/f.cpuVs, 1/f.cpuHi, 1/f.cpuLo, -f.over)
		}
		w(".\n\n")
	} else if nginx == nil || len(ngSat) == 0 {
		w("nginx was not in this run's paired phase (it runs when the `nginx` scenario or the `http1` group is selected): no filter has no paired reference beside it.\n\n")
	}

	if hasFixed {
		w("#### At a fixed %s req/s (`wasmgate bench --rate`)\n\n", rate)
		w("| filters on the route | cycles | achieved req/s | p99 | proxy CPU µs/req | proxy CPU | proxy CPU µs/req over no filter (quartiles) | errors | others' CPU |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		var short []string
		frow := func(s pairedSummary, label string) {
			over := "—"
			if s.hasBase && s.scenario.Name != "filter-none" && s.scenario.Group == groupFilters {
				over = fmt.Sprintf("%+.2f (%+.2f to %+.2f)", s.over, s.overLo, s.overHi)
			}
			if s.rps < 0.97*res.PairedRate {
				short = append(short, fmt.Sprintf("%s (%s req/s)", label, thousands(s.rps)))
			}
			w("| %s | %d | %s | %s | %.2f | %.0f%% | %s | %d | %.0f%% |\n", label, s.cycles, thousands(s.rps), latency(s.p99), s.cpu, s.cpuPct, over, s.errors, s.others)
		}
		for _, sc := range scens {
			if s, ok := findPaired(fixed, sc.Name); ok {
				frow(s, sc.Label)
			} else {
				w("| %s | — | — | — | — | — | — | not run | — |\n", sc.Label)
			}
		}
		for _, s := range ngFixed {
			frow(s, "nginx (no filter; reference)")
		}
		w("\n")
		if len(short) > 0 {
			w("**Below the rate**: %s did not sustain %s req/s (median achieved): its CPU per request is not at the same rate as the others' and its difference over no filter is not the filters' cost alone; a lower `--paired-rate`, or a quieter machine, fixes that.\n\n",
				strings.Join(short, ", "), rate)
		}
	}

	w("**Targets (issues 4 and 16), judged on these paired runs**:\n\n")
	if h, ok := findPaired(sat, "filter-hello"); ok && h.hasBase {
		w("- The minimal Go filter keeps at least %.1f× the no-filter req/s (at saturation, the only throughput measure): %s, %.3f× (%.3f–%.3f).\n",
			helloMinRatio, metOrNot(h.vsBase >= helloMinRatio), h.vsBase, h.vsLo, h.vsHi)
	} else {
		w("- The minimal Go filter keeps at least %.1f× the no-filter req/s: **not measured** (no paired figures of hello).\n", helloMinRatio)
	}
	cpuTarget(w, "The minimal Go filter adds at most", helloCPUBudgetUS, false, "filter-hello", res.PairedRate, fixed, sat)
	cpuTarget(w, "The three first-party filters chained add under", chainCPUBudgetUS, true, "filter-chain", res.PairedRate, fixed, sat)
	w("\n")
	return true
}

// cpuTarget writes one CPU target's verdicts: on the fixed-rate difference
// over no filter and on the saturated one, and says so when the two
// disagree. strict means the budget itself fails. A set
// that did not sustain the fixed rate has its fixed-rate verdict qualified.
func cpuTarget(w func(string, ...any), what string, budget float64, strict bool, name string, rate float64, fixed, sat []pairedSummary) {
	within := func(v float64) bool {
		if strict {
			return v < budget
		}
		return v <= budget
	}
	w("- %s %.0f µs of proxy CPU per request: ", what, budget)
	f, okF := findPaired(fixed, name)
	s, okS := findPaired(sat, name)
	okF, okS = okF && f.hasBase, okS && s.hasBase
	if !okF && !okS {
		w("**not measured** (no paired figures of %s).\n", name)
		return
	}
	var parts []string
	if okF {
		below := ""
		if f.rps < 0.97*rate {
			below = fmt.Sprintf(", but at %s req/s, below the rate (see above)", thousands(f.rps))
		}
		parts = append(parts, fmt.Sprintf("at the fixed rate (with the wake-ups of an idle proxy) %s, %+.2f µs (%+.2f to %+.2f)%s", metOrNot(within(f.over)), f.over, f.overLo, f.overHi, below))
	}
	if okS {
		parts = append(parts, fmt.Sprintf("at saturation (with the kernel time of the lower rate) %s, %+.2f µs (%+.2f to %+.2f)", metOrNot(within(s.over)), s.over, s.overLo, s.overHi))
	}
	w("%s.", strings.Join(parts, "; "))
	if okF && okS && within(f.over) != within(s.over) {
		w(" The two verdicts differ: each measure carries a bias of its own, the kernel's cost of serving fewer requests a second at saturation, the wake-ups and cold caches of an idle proxy at the fixed rate (see above).")
	}
	w("\n")
}

// cpuRatio returns s's proxy CPU per request as a share of its base's.
func cpuRatio(sums []summary, s summary) string {
	b, ok := findSummary(sums, s.scenario.Base)
	if !ok || b.cpuPerReq <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", s.cpuPerReq/b.cpuPerReq)
}

func overUnder(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}

// renderGroupsSVG draws the groups other than http1: median req/s and proxy
// CPU time per request, one bar per scenario, grouped. It returns "" when
// there are no such scenarios.
func renderGroupsSVG(res *results) string {
	pl, ok := groupPayload(res)
	if !ok {
		return ""
	}
	const (
		width    = 960
		labelW   = 300
		valueW   = 110
		barH     = 16
		headH    = 22
		panelTop = 34
		margin   = 16
	)
	colors := map[string]string{groupFilters: "#4c78a8", groupHTTPS: "#f58518", groupH3: "#54a24b", groupReload: "#e45756", groupMesh: "#72b7b2"}
	titles := map[string]string{groupFilters: "Wasm filters, HTTP/1.1", groupHTTPS: "HTTPS: HTTP/1.1 and HTTP/2 over TLS",
		groupH3: "HTTP/3", groupReload: "Reload under load (wrk with a Lua counter)", groupMesh: "Mesh: two proxies in a row (CPU of both)"}
	type row struct {
		head  string // a group heading, or
		s     summary
		group string
	}
	var rows []row
	for _, g := range groups[1:] {
		sums := summarize(res, g, pl.Name)
		if len(sums) == 0 {
			continue
		}
		rows = append(rows, row{head: titles[g]})
		for _, s := range sums {
			rows = append(rows, row{s: s, group: g})
		}
	}
	panels := []struct {
		title string
		value func(summary) float64
		label func(float64) string
	}{
		{"Requests per second (median; higher is better)", func(s summary) float64 { return s.rps }, thousands},
		{"Proxy CPU time per request, µs (median; lower is better)", func(s summary) float64 { return s.cpuPerReq },
			func(v float64) string { return fmt.Sprintf("%.2f µs", v) }},
	}
	rowsH := 0
	for _, r := range rows {
		if r.head != "" {
			rowsH += headH
		} else {
			rowsH += barH
		}
	}
	panelH := panelTop + rowsH + 12
	height := margin + 20 + len(panels)*panelH + margin
	barW := float64(width - 2*margin - labelW - valueW)

	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	w(`<text x="%d" y="%d" fill="#555" text-anchor="end">%s × %s, %s response body, proxy alone on CPU %d</text>`+"\n",
		width-margin, margin+10, plural(res.Rounds, "round"), html.EscapeString(orDash(res.GroupDuration)), html.EscapeString(pl.Label), res.ProxyCPU)
	y0 := margin + 20
	for _, pn := range panels {
		maxV := 0.0
		for _, r := range rows {
			if r.head == "" && r.s.hasFigures && pn.value(r.s) > maxV {
				maxV = pn.value(r.s)
			}
		}
		w(`<text x="%d" y="%d" font-weight="bold" font-size="13">%s</text>`+"\n", margin, y0+18, html.EscapeString(pn.title))
		y := y0 + panelTop
		for _, r := range rows {
			if r.head != "" {
				w(`<text x="%d" y="%d" font-style="italic" fill="#333">%s</text>`+"\n", margin, y+headH-6, html.EscapeString(r.head))
				y += headH
				continue
			}
			w(`<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", margin+labelW-8, y+barH-4, html.EscapeString(r.s.scenario.Label))
			if !r.s.hasFigures {
				w(`<text x="%d" y="%d" fill="#888">not run</text>`+"\n", margin+labelW+4, y+barH-4)
				y += barH
				continue
			}
			v := pn.value(r.s)
			bw := 0.0
			if maxV > 0 {
				bw = barW * v / maxV
			}
			w(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", margin+labelW, y+2, bw, barH-4, colors[r.group])
			w(`<text x="%.1f" y="%d">%s</text>`+"\n", float64(margin+labelW)+bw+4, y+barH-4, html.EscapeString(pn.label(v)))
			y += barH
		}
		y0 += panelH
	}
	w("</svg>\n")
	return b.String()
}
