package main

import (
	"fmt"
	"html"
	"strings"
)

// Targets of the groups other than http1, as the report states them.
const (
	helloCPUBudgetUS = 5.0 // a minimal Go filter adds at most this proxy CPU per request
	helloMinRatio    = 0.8 // and keeps at least this share of the no-filter req/s
	h2MinVsNginx     = 1.0 // wasmgate's h2 req/s, as a share of nginx's
	h3MinVsCaddy     = 1.2 // wasmgate's h3 req/s, as a share of Caddy's
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
		if h, ok := findSummary(sums, "filter-hello"); ok && h.hasBase {
			met := h.cpuOverBase <= helloCPUBudgetUS && h.vsBase >= helloMinRatio
			w("Target (issue 4), a minimal Go filter costs at most %.0f µs of proxy CPU per request and keeps at least %.1f× the no-filter throughput: %s. "+
				"The hello filter adds %.2f µs of proxy CPU per request (%s the budget) and keeps %.2f× the no-filter req/s (%s %.1f×).",
				helloCPUBudgetUS, helloMinRatio, metOrNot(met), h.cpuOverBase, overUnder(h.cpuOverBase <= helloCPUBudgetUS, "within", "over"),
				h.vsBase, overUnder(h.vsBase >= helloMinRatio, "at least", "below"), helloMinRatio)
			if base, ok := findSummary(sums, "filter-none"); ok && base.cpuPct < 95 {
				w(" The no-filter run used %.0f%% of its core: its req/s is bounded by the load core, so the throughput ratio understates what the filter costs at the proxy's own saturation; the CPU time per request does not.", base.cpuPct)
			}
			w("\n\n")
		} else {
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
	colors := map[string]string{groupFilters: "#4c78a8", groupHTTPS: "#f58518", groupH3: "#54a24b", groupReload: "#e45756"}
	titles := map[string]string{groupFilters: "Wasm filters, HTTP/1.1", groupHTTPS: "HTTPS: HTTP/1.1 and HTTP/2 over TLS",
		groupH3: "HTTP/3", groupReload: "Reload under load (wrk with a Lua counter)"}
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
