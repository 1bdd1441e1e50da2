package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// results is everything one run measured; it is written to results.json
// and is the only input of the report.
type results struct {
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished"`
	Rounds      int       `json:"rounds"`
	Duration    string    `json:"duration"`
	Warmup      string    `json:"warmup"`
	Connections int       `json:"connections"`
	Threads     int       `json:"threads"`
	ProxyCPU    int       `json:"proxy_cpu"`
	LoadCPU     int       `json:"load_cpu"`
	Quick       bool      `json:"quick"`
	Nice        int       `json:"nice,omitempty"`
	MaxOtherPct float64   `json:"max_other_pct"`
	Retries     int       `json:"retries"` // samples measured again for interference
	// The open-loop runs of `wasmgate bench`, if any.
	OpenRate     float64 `json:"open_rate,omitempty"`
	OpenDuration string  `json:"open_duration,omitempty"`
	OpenSkipped  string  `json:"open_skipped,omitempty"`
	// The groups other than http1.
	GroupDuration  string `json:"group_duration,omitempty"`
	GroupWarmup    string `json:"group_warmup,omitempty"`
	H2Streams      int    `json:"h2_streams,omitempty"`
	H3Connections  int    `json:"h3_connections,omitempty"`
	H3Streams      int    `json:"h3_streams,omitempty"`
	ReloadInterval string `json:"reload_interval,omitempty"`

	Payloads  []payload      `json:"payloads"`
	Env       envInfo        `json:"env"`
	Scenarios []scenarioInfo `json:"scenarios"`
	Samples   []sample       `json:"samples"`

	// The paired phase (see paired.go): its samples, Round being the cycle.
	PairedCycles   int    `json:"paired_cycles,omitempty"`
	PairedDuration string `json:"paired_duration,omitempty"`
	// PairedMirror: each paired cycle ran its order forward, then backward.
	PairedMirror bool     `json:"paired_mirror,omitempty"`
	PairedWarmup string   `json:"paired_warmup,omitempty"`
	PairedFailed string   `json:"paired_failed,omitempty"`
	Paired       []sample `json:"paired,omitempty"`
	// The filters' paired phase, with the same cycles and lengths: its
	// runs at saturation (wrk) and at the fixed PairedRate (wasmgate
	// bench), the filter scenarios and nginx, Round being the cycle.
	PairedFilters       []sample `json:"paired_filters,omitempty"`
	PairedFixed         []sample `json:"paired_fixed,omitempty"`
	PairedRate          float64  `json:"paired_rate,omitempty"`
	PairedRateSkipped   string   `json:"paired_rate_skipped,omitempty"`
	PairedFiltersFailed string   `json:"paired_filters_failed,omitempty"`
	// The mesh group's paired phase, the same way: its pairs at saturation
	// and at PairedRate.
	PairedMesh       []sample `json:"paired_mesh,omitempty"`
	PairedMeshFixed  []sample `json:"paired_mesh_fixed,omitempty"`
	PairedMeshFailed string   `json:"paired_mesh_failed,omitempty"`
}

type scenarioInfo struct {
	Name  string `json:"name"`
	Label string `json:"label"`
	// Group is the table the scenario belongs to; empty means http1.
	Group string `json:"group,omitempty"`
	Peer  string `json:"peer,omitempty"` // the proxy; empty for direct
	// Base is the scenario the group's ratio column compares to.
	Base    string `json:"base,omitempty"`
	Skipped string `json:"skipped,omitempty"` // why it has no samples
	// Failures lists the rounds the scenario failed in, with the error.
	Failures []string `json:"failures,omitempty"`
}

// sample is one measured wrk run of one scenario and payload.
type sample struct {
	Scenario string `json:"scenario"`
	Payload  string `json:"payload"`
	Round    int    `json:"round"`
	// Pass is 1 or 2 in a paired cycle run forward then backward
	// (-paired-mirror): the first or the reverse pass; 0 otherwise.
	Pass     int     `json:"pass,omitempty"`
	RPS      float64 `json:"rps"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	P50US    int64   `json:"p50_us"`
	P90US    int64   `json:"p90_us"`
	P99US    int64   `json:"p99_us"`
	P999US   int64   `json:"p999_us"`
	MaxUS    int64   `json:"max_us"`
	WallS    float64 `json:"wall_s"`
	Attempts int     `json:"attempts"` // 2 when measured again for interference
	MeanUS   float64 `json:"mean_us,omitempty"`
	// Non2xx counts responses outside 2xx where the generator reports
	// them (h2load, wasmgate bench, wrk/count.lua).
	Non2xx int64 `json:"non2xx,omitempty"`
	// Rewrites of the configuration file during the run, and the reloads
	// the proxy logged meanwhile (reload scenario only).
	Rewrites int `json:"rewrites,omitempty"`
	Reloads  int `json:"reloads,omitempty"`
	// CPU time of the proxy's processes over the run, per completed request
	// and as a share of one core. Zero for the direct scenario.
	ProxyCPUUSPerReq float64 `json:"proxy_cpu_us_per_req"`
	ProxyCPUPct      float64 `json:"proxy_cpu_pct"`
	// The same for the upstream, and wrk's share of its core.
	UpstreamCPUUSPerReq float64 `json:"upstream_cpu_us_per_req"`
	UpstreamCPUPct      float64 `json:"upstream_cpu_pct"`
	WrkCPUPct           float64 `json:"wrk_cpu_pct"`
	// Whole-core figures from /proc/stat: the share of time each pinned core
	// was busy (irq and softirq included: that is where the kernel runs
	// loopback networking), and the proxy core's busy time per request.
	LoadCoreBusyPct   float64 `json:"load_core_busy_pct"`
	ProxyCoreBusyPct  float64 `json:"proxy_core_busy_pct"`
	ProxyCoreUSPerReq float64 `json:"proxy_core_us_per_req"`
	// ProxyPSSKB is the proportional set size of the proxy's processes
	// (groupPSS) once the run ended, in KiB; 0 where not read.
	ProxyPSSKB int64 `json:"proxy_pss_kb,omitempty"`
	// Process time (user, system) and steal on each pinned core not
	// accounted to the processes pinned there: other tenants of the machine.
	LoadCoreOtherPct  float64 `json:"load_core_other_pct"`
	ProxyCoreOtherPct float64 `json:"proxy_core_other_pct"`
	// The open-loop run that followed, if any.
	Open *openSample `json:"open,omitempty"`
}

// openSample is one open-loop run at results.OpenRate.
type openSample struct {
	RPS       float64 `json:"rps"`
	Responses int64   `json:"responses"`
	Errors    int64   `json:"errors"`
	Aborted   string  `json:"aborted,omitempty"` // why the run ended early
	// Latency percentiles, from when each request was due.
	P50US  float64 `json:"p50_us"`
	P99US  float64 `json:"p99_us"`
	P999US float64 `json:"p999_us"`
}

// interference returns the larger share of a pinned core that other
// processes used during the sample. The proxy's core does not count when
// there is no proxy.
func (s sample) interference() float64 {
	if s.Scenario == "direct" {
		return s.LoadCoreOtherPct
	}
	return max(s.LoadCoreOtherPct, s.ProxyCoreOtherPct)
}

// summary is the medians across rounds of one scenario and payload.
type summary struct {
	scenario   scenarioInfo
	proxied    bool
	n          int
	rps        float64
	p50, p99   float64 // µs
	cpuPerReq  float64 // µs of proxy CPU per request
	cpuPct     float64
	upPerReq   float64
	loadBusy   float64
	proxyBusy  float64
	errors     int64
	others     float64 // share of a pinned core used by other processes
	vsNginx    float64 // rps ratio; 0 when there is no nginx figure
	vsDirect   float64
	cpuVsNginx float64 // CPU per request ratio
	// Against the group's base scenario: req/s ratio, and the difference
	// of proxy CPU time per request (µs).
	vsBase, cpuOverBase float64
	hasBase             bool
	mean                float64 // µs
	non2xx              int64
	rewrites, reloads   int // sums over rounds

	// Medians of the open-loop runs, when hasOpen.
	hasOpen                             bool
	openRPS, openP50, openP99, openP999 float64
	openErrors                          int64
	openFailed                          int // runs without a single response
	hasFigures                          bool
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// summarize returns one summary per scenario for the payload, in the order
// of res.Scenarios.
func summarize(res *results, group, pl string) []summary {
	var out []summary
	for _, sc := range res.Scenarios {
		if sc.group() != group {
			continue
		}
		sm := summary{scenario: sc, proxied: sc.Name != "direct"}
		var rps, p50, p99, cpu, pct, up, lb, pb, oth, mean []float64
		var orps, op50, op99, op999 []float64
		for _, s := range res.Samples {
			if s.Scenario != sc.Name || s.Payload != pl {
				continue
			}
			rps = append(rps, s.RPS)
			p50 = append(p50, float64(s.P50US))
			p99 = append(p99, float64(s.P99US))
			cpu = append(cpu, s.ProxyCPUUSPerReq)
			pct = append(pct, s.ProxyCPUPct)
			up = append(up, s.UpstreamCPUUSPerReq)
			lb = append(lb, s.LoadCoreBusyPct)
			pb = append(pb, s.ProxyCoreBusyPct)
			oth = append(oth, s.interference())
			sm.errors += s.Errors
			sm.non2xx += s.Non2xx
			sm.rewrites += s.Rewrites
			sm.reloads += s.Reloads
			mean = append(mean, s.MeanUS)
			if o := s.Open; o != nil && o.Responses == 0 {
				sm.openFailed++
			} else if o != nil {
				orps, op50, op99, op999 = append(orps, o.RPS), append(op50, o.P50US), append(op99, o.P99US), append(op999, o.P999US)
				sm.openErrors += o.Errors
			}
		}
		if len(orps) > 0 {
			sm.hasOpen = true
			sm.openRPS, sm.openP50, sm.openP99, sm.openP999 = median(orps), median(op50), median(op99), median(op999)
		}
		sm.n = len(rps)
		if sm.n > 0 {
			sm.hasFigures = true
			sm.rps, sm.p50, sm.p99 = median(rps), median(p50), median(p99)
			sm.cpuPerReq, sm.cpuPct, sm.upPerReq = median(cpu), median(pct), median(up)
			sm.loadBusy, sm.proxyBusy, sm.others = median(lb), median(pb), median(oth)
			sm.mean = median(mean)
		}
		out = append(out, sm)
	}
	for i := range out {
		s := &out[i]
		for j := range out {
			b := &out[j]
			if s.hasFigures && b.hasFigures && s.scenario.Base != "" && b.scenario.Name == s.scenario.Base && b.rps > 0 {
				s.hasBase = true
				s.vsBase = s.rps / b.rps
				s.cpuOverBase = s.cpuPerReq - b.cpuPerReq
			}
		}
	}
	if group != groupHTTP1 {
		return out
	}
	var nginx, direct *summary
	for i := range out {
		switch {
		case out[i].scenario.Name == "nginx" && out[i].hasFigures:
			nginx = &out[i]
		case out[i].scenario.Name == "direct" && out[i].hasFigures:
			direct = &out[i]
		}
	}
	for i := range out {
		s := &out[i]
		if !s.hasFigures {
			continue
		}
		if nginx != nil && nginx.rps > 0 {
			s.vsNginx = s.rps / nginx.rps
			if s.proxied && nginx.cpuPerReq > 0 {
				s.cpuVsNginx = s.cpuPerReq / nginx.cpuPerReq
			}
		}
		if direct != nil && direct.rps > 0 {
			s.vsDirect = s.rps / direct.rps
		}
	}
	return out
}

// writeReport writes RESULTS.md and results.svg into dir.
func writeReport(dir string, res *results) error {
	if err := os.WriteFile(filepath.Join(dir, "results.svg"), []byte(renderSVG(res)), 0o644); err != nil {
		return err
	}
	groupsSVG := filepath.Join(dir, "results-groups.svg")
	if svg := renderGroupsSVG(res); svg != "" {
		if err := os.WriteFile(groupsSVG, []byte(svg), 0o644); err != nil {
			return err
		}
	} else if err := os.Remove(groupsSVG); err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "RESULTS.md"), []byte(renderMarkdown(res)), 0o644)
}

func renderMarkdown(res *results) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	w("# Side-by-side benchmark results\n\n")
	w("Generated by `benchmarks/run.sh` (the `benchmarks/compare` program) on %s, in %s.\n",
		res.Started.Format("2006-01-02 15:04 MST"), res.Finished.Sub(res.Started).Round(time.Second))
	w("Do not edit by hand: rerun the suite, or `go run ./benchmarks/compare -report-only` to redraw from `results.json`.\n")
	w("Figures of single parts, measured by Go tests and benchmarks rather than this suite (the memory of a proxy with the first-party Wasm filters, " +
		"the mesh's sidecars and control plane, telemetry, the HTTP/1.1 framer), are in [COMPONENTS.md](COMPONENTS.md), each with its method.\n")
	if res.Quick {
		w("\n**This is a `--quick` smoke run (one short round): its figures are not fit for comparison.**\n")
	}
	if o := runInterference(res); o > res.MaxOtherPct {
		w("\n**Other work on the machine used %.0f%% of a pinned core in the median sample (over %.0f%% counts as disturbed): "+
			"these figures are disturbed, throughput and latency most, CPU time per request least. See the others' CPU column.**\n", o, res.MaxOtherPct)
	}
	w("\nIn the HTTP/1.1 tables, every figure is the median over %s of a %s wrk run (after a %s warm-up), %d connections, HTTP/1.1 keep-alive; "+
		"the proxy alone on CPU %d, wrk and the upstream together on CPU %d. Method and versions are below.\n\n",
		plural(res.Rounds, "round"), res.Duration, res.Warmup, res.Connections, res.ProxyCPU, res.LoadCPU)
	w("![Median requests per second, p99 latency and proxy CPU time per request, by scenario and response size](results.svg)\n\n")

	for _, pl := range res.Payloads {
		w("## %s response body\n\n", pl.Label)
		w("| scenario | req/s | p50 | p99 | proxy CPU µs/req | proxy CPU | req/s vs nginx | req/s vs direct | CPU/req vs nginx | errors | others' CPU |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, s := range summarize(res, groupHTTP1, pl.Name) {
			if !s.hasFigures {
				w("| %s | — | — | — | — | — | — | — | — | not run | — |\n", s.scenario.Label)
				continue
			}
			cpu, pct, cpuVs := "—", "—", "—"
			if s.proxied {
				cpu = fmt.Sprintf("%.2f", s.cpuPerReq)
				pct = fmt.Sprintf("%.0f%%", s.cpuPct)
				if s.cpuVsNginx > 0 {
					cpuVs = fmt.Sprintf("%.2f×", s.cpuVsNginx)
				}
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %.0f%% |\n",
				s.scenario.Label, thousands(s.rps), latency(s.p50), latency(s.p99), cpu, pct,
				ratio(s.vsNginx), ratio(s.vsDirect), cpuVs, s.errors, s.others)
		}
		w("\n")
		if res.OpenRate > 0 {
			w("Latency at a fixed %s req/s (open loop, `wasmgate bench --rate`, %s per run, latency measured from when each request was due):\n\n",
				thousands(res.OpenRate), res.OpenDuration)
			w("| scenario | achieved req/s | p50 | p99 | p99.9 | errors |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
			for _, s := range summarize(res, groupHTTP1, pl.Name) {
				failed := ""
				if s.openFailed > 0 {
					failed = fmt.Sprintf(" (and %s without a response)", plural(s.openFailed, "run"))
				}
				if !s.hasOpen {
					if failed == "" {
						failed = " (not run)"
					}
					w("| %s | — | — | — | — | —%s |\n", s.scenario.Label, failed)
					continue
				}
				w("| %s | %s | %s | %s | %s | %d%s |\n", s.scenario.Label, thousands(s.openRPS),
					latency(s.openP50), latency(s.openP99), latency(s.openP999), s.openErrors, failed)
			}
			w("\n")
		}
	}

	renderPaired(w, res)

	if _, ok := groupPayload(res); ok {
		w("![Median requests per second and proxy CPU time per request of the filters, HTTPS, HTTP/3 and reload scenarios](results-groups.svg)\n\n")
		renderGroups(w, res)
	}

	var skipped []scenarioInfo
	for _, sc := range res.Scenarios {
		if sc.Skipped != "" {
			skipped = append(skipped, sc)
		}
	}
	if len(skipped) > 0 {
		w("### Scenarios without figures\n\n")
		for _, sc := range skipped {
			w("- **%s**: %s\n", sc.Label, oneLine(sc.Skipped, 400))
		}
		w("\n")
	}
	var partial []scenarioInfo
	for _, sc := range res.Scenarios {
		if sc.Skipped == "" && len(sc.Failures) > 0 {
			partial = append(partial, sc)
		}
	}
	if len(partial) > 0 {
		w("### Failed rounds\n\nThese scenarios' medians are over the rounds that did not fail.\n\n")
		for _, sc := range partial {
			for _, f := range sc.Failures {
				w("- **%s**, %s\n", sc.Label, oneLine(f, 400))
			}
		}
		w("\n")
	}

	renderMemory(w, res)

	w("## How to read these figures\n\n")
	w("- **req/s** is throughput at saturation of a closed loop: each of the %d connections sends its next request as soon as the previous answer arrives. "+
		"**p50** and **p99** are latencies *at that saturation*, from wrk's histogram; they are not latencies at a fixed offered rate, and a closed loop under-reports tail latency "+
		"(coordinated omission), the same way for every scenario.\n", res.Connections)
	if res.OpenRate > 0 {
		w("- The **fixed-rate** tables correct for that: `wasmgate bench` sends %s req/s whatever the answers' pace (%d connections, pinned with wrk to CPU %d) "+
			"and measures each latency from the moment its request was due. A proxy that cannot sustain the rate shows it as achieved req/s below the rate and as exploding percentiles.\n",
			thousands(res.OpenRate), res.Connections, res.LoadCPU)
	} else if res.OpenSkipped != "" {
		w("- There are no fixed-rate (open-loop) latency figures in this run: %s.\n", oneLine(res.OpenSkipped, 300))
	}
	w("- With two cores, wrk and the upstream share CPU %d while the proxy has CPU %d to itself. **direct** is therefore the ceiling of the client side: "+
		"a proxy whose **proxy CPU** column is well below 100%% was not the bottleneck, and its req/s is bounded by CPU %d, not by itself. "+
		"For such a proxy the fair comparison is **proxy CPU µs/req**: the CPU time (user + system, every process and thread of the proxy) spent per request served.\n",
		res.LoadCPU, res.ProxyCPU, res.LoadCPU)
	w("- **bare fasthttp forwarder** (`benchmarks/forwarder`) is about 60 lines: one fasthttp server handing every request to one `fasthttp.HostClient`. " +
		"It is the floor for a Go proxy; the distance from it to wasmgate is the price of routing, filters, metrics and the rest.\n")
	w("- **proxy CPU µs/req** counts the proxy's own processes. The kernel's loopback network stack runs largely in softirq context, which Linux accounts to the core, " +
		"not to a process; the raw samples also give the proxy core's whole busy time per request, which includes it (and is the same kind of cost for every proxy).\n")
	w("- Ratios are of medians. The machine is shared with other work: for each sample the suite records how much of each pinned core went to processes other than the ones pinned there "+
		"(**others' CPU**: the median over rounds of the larger of the two cores' shares; a row where it is high is not to be trusted), "+
		"and measured a sample again (keeping the quieter of the two) when that exceeded %.0f%% of a core (%s measured again). See the raw samples.\n\n",
		res.MaxOtherPct, plural(res.Retries, "sample"))

	w("## Method\n\n")
	e := res.Env
	w("- **Machine**: %s, %d CPUs, %.0f GiB RAM; %s, Linux %s. Load average at start %s, at end %s.\n",
		orDash(e.CPUModel), e.CPUs, e.MemGiB, orDash(e.OS), orDash(e.Kernel), orDash(e.LoadAvgStart), orDash(e.LoadAvgEnd))
	w("- **Pinning** (`taskset -c`): the proxy under test on CPU %d; wrk and `benchmarks/upstream` on CPU %d. "+
		"Go programs (upstream, forwarder, wasmgate, Caddy) therefore run with GOMAXPROCS 1; nginx has one worker process and HAProxy one thread.%s\n",
		res.ProxyCPU, res.LoadCPU, niceNote(res.Nice))
	w("- **Load**: wrk, %d thread(s), %d connections, HTTP/1.1 keep-alive, `--latency`, GET of one URL; summary read by `benchmarks/wrk/report.lua`. "+
		"Everything on 127.0.0.1.\n", res.Threads, res.Connections)
	w("- **Runs**: %s. In each round every scenario in turn is started on fresh ports, checked to return both bodies whole, "+
		"then for each payload given a %s warm-up and a %s measured run, then stopped. The order of scenarios rotates from round to round. "+
		"Medians are taken per column across rounds.\n", plural(res.Rounds, "round"), res.Warmup, res.Duration)
	if _, ok := groupPayload(res); ok {
		w("- **Other groups** (filters, HTTPS, HTTP/3, reload): their scenarios are interleaved with the HTTP/1.1 ones in the same rounds, "+
			"but measure the first payload only, with a shorter run (%s after a %s warm-up) to keep a full run near 20 minutes, and have no fixed-rate run in the rounds. "+
			"A proxy serving TLS reads the suite's self-signed certificate; the driver checks every proxy over the protocol it serves (https for TLS) before measuring.\n",
			orDash(res.GroupDuration), orDash(res.GroupWarmup))
	}
	var pls []string
	for _, p := range res.Payloads {
		pls = append(pls, fmt.Sprintf("`%s` (%s)", p.Path, p.Label))
	}
	w("- **Payloads**: %s, served from memory by `benchmarks/upstream` (one event loop on one epoll set, keep-alive, responses built ahead), each response in one write.\n", strings.Join(pls, ", "))
	w("- **Proxy CPU**: utime + stime from `/proc/PID/stat` of every process in the proxy's process group, read just before and just after the measured run, " +
		"divided by the requests wrk completed (µs/req) or by the wall time (share of one core).\n")
	w("- **Peers**: configured for HTTP/1.1 keep-alive on both sides with a pool of idle upstream connections, access logs off; configs in [`peers/`](peers/): " +
		"nginx (`proxy_http_version 1.1`, upstream `keepalive`), HAProxy (`http-reuse always`), Caddy (`reverse_proxy` with a 1024-connection idle pool), " +
		"wasmgate (one listener, cluster and route, no filters). " +
		"Every proxy forwards alike: the client's Host, `X-Forwarded-For`, `-Proto` and `-Host`, and an `X-Request-Id` when the client sent none, as wasmgate does by default; the bare forwarder adds nothing.\n")
	if e.Tree != "" {
		w("- **Source**: wasmgate, the upstream and the forwarder built from commit %s.\n", e.Tree)
	}
	w("\n| software | version |\n| --- | --- |\n")
	for _, v := range e.Versions {
		w("| %s | %s |\n", v.Name, strings.ReplaceAll(oneLine(v.Version, 200), "|", `\|`))
	}
	w("\n")

	w("## Raw samples\n\n<details><summary>%d samples</summary>\n\n", len(res.Samples))
	w("Columns as above, plus: **core µs/req**, all busy time of CPU %d (the proxy's core, softirq included) per request; "+
		"**upstream µs/req**, the upstream's CPU time per request; **others on CPU n**, time on that core used by processes other than the ones pinned there; "+
		"**tries**, 2 when the sample was measured again because others used more than %.0f%% of a core.\n\n", res.ProxyCPU, res.MaxOtherPct)
	w("| round | scenario | payload | req/s | p50 | p99 | p99.9 | proxy CPU µs/req | proxy CPU | core µs/req | upstream µs/req | others on CPU %d | others on CPU %d | tries | errors |\n",
		res.LoadCPU, res.ProxyCPU)
	w("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range res.Samples {
		cpu, pct, core := "—", "—", "—"
		if s.Scenario != "direct" {
			cpu, pct = fmt.Sprintf("%.2f", s.ProxyCPUUSPerReq), fmt.Sprintf("%.0f%%", s.ProxyCPUPct)
			core = fmt.Sprintf("%.2f", s.ProxyCoreUSPerReq)
		}
		w("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %.0f%% | %.0f%% | %d | %d |\n",
			s.Round, s.Scenario, s.Payload, thousands(s.RPS), latency(float64(s.P50US)), latency(float64(s.P99US)),
			latency(float64(s.P999US)), cpu, pct, core, s.UpstreamCPUUSPerReq, s.LoadCoreOtherPct, s.ProxyCoreOtherPct, s.Attempts, s.Errors)
	}
	w("\n</details>\n")
	return b.String()
}

// runInterference returns the median over all samples of the share of a
// pinned core used by other processes.
func runInterference(res *results) float64 {
	var xs []float64
	for _, s := range res.Samples {
		xs = append(xs, s.interference())
	}
	if len(xs) == 0 {
		return 0
	}
	return median(xs)
}

func niceNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" Every pinned process ran at niceness %d (`nice -n %d`, and the same for its session, `/proc/PID/autogroup`, where autogroup scheduling is on), to be favoured over other work on the machine.", n, n)
}

func notRun(has bool) string {
	if has {
		return ""
	}
	return "not run"
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// latency formats microseconds.
func latency(us float64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 1e6:
		return fmt.Sprintf("%.2f ms", us/1e3)
	}
	return fmt.Sprintf("%.2f s", us/1e6)
}

func ratio(r float64) string {
	if r == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", r)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// renderSVG draws three panels of horizontal bars, one row per scenario and
// one bar per payload: median req/s, median p99 latency and median proxy CPU
// time per request.
func renderSVG(res *results) string {
	const (
		width    = 960
		labelW   = 190
		valueW   = 110
		barH     = 14
		rowGap   = 12
		panelTop = 34
		margin   = 16
	)
	colors := []string{"#4c78a8", "#f58518", "#54a24b", "#e45756"}
	sums := make([][]summary, len(res.Payloads))
	for i, p := range res.Payloads {
		sums[i] = summarize(res, groupHTTP1, p.Name)
	}
	type panel struct {
		title string
		value func(summary) (float64, string) // the value, or why there is none
		label func(float64) string
	}
	panels := []panel{
		{"Requests per second (median; higher is better)",
			func(s summary) (float64, string) { return s.rps, notRun(s.hasFigures) },
			thousands},
		{"p99 latency at saturation, wrk (median; lower is better)",
			func(s summary) (float64, string) { return s.p99, notRun(s.hasFigures) },
			latency},
		{"Proxy CPU time per request, µs (median; lower is better)",
			func(s summary) (float64, string) {
				if s.hasFigures && !s.proxied {
					return 0, "no proxy"
				}
				return s.cpuPerReq, notRun(s.hasFigures)
			},
			func(v float64) string { return fmt.Sprintf("%.2f µs", v) }},
	}
	if res.OpenRate > 0 {
		// Latency at a fixed rate is the figure to quote; wrk's, at
		// saturation, stays in the tables.
		panels[1] = panel{fmt.Sprintf("p99 latency at a fixed %s req/s, open loop (median; lower is better)", thousands(res.OpenRate)),
			func(s summary) (float64, string) {
				if !s.hasOpen && s.openFailed > 0 {
					return 0, "no response"
				}
				return s.openP99, notRun(s.hasOpen)
			},
			latency}
	}
	h1 := scenariosOf(res, groupHTTP1)
	nScen := len(h1)
	rowH := len(res.Payloads)*barH + rowGap
	panelH := panelTop + nScen*rowH + 8
	legendH := 30
	height := margin + legendH + len(panels)*panelH + margin
	barW := float64(width - 2*margin - labelW - valueW)

	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	// Legend.
	x := margin + labelW
	for i, p := range res.Payloads {
		w(`<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", x, margin, colors[i%len(colors)])
		w(`<text x="%d" y="%d">%s response body</text>`+"\n", x+16, margin+10, html.EscapeString(p.Label))
		x += 170
	}
	note := ""
	if o := runInterference(res); o > res.MaxOtherPct {
		note = fmt.Sprintf("; disturbed: others used %.0f%% of a core", o)
	}
	w(`<text x="%d" y="%d" fill="#555" text-anchor="end">%s × %s, %d connections, proxy alone on CPU %d%s</text>`+"\n",
		width-margin, margin+10, plural(res.Rounds, "round"), html.EscapeString(res.Duration), res.Connections, res.ProxyCPU, note)

	y0 := margin + legendH
	for _, pn := range panels {
		maxV := 0.0
		for _, ss := range sums {
			for _, s := range ss {
				if v, why := pn.value(s); why == "" && v > maxV {
					maxV = v
				}
			}
		}
		w(`<text x="%d" y="%d" font-weight="bold" font-size="13">%s</text>`+"\n", margin, y0+18, html.EscapeString(pn.title))
		for si, sc := range h1 {
			ry := y0 + panelTop + si*rowH
			w(`<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n",
				margin+labelW-8, ry+len(res.Payloads)*barH/2+4, html.EscapeString(sc.Label))
			for pi := range res.Payloads {
				s := sums[pi][si]
				by := ry + pi*barH
				v, why := pn.value(s)
				if why != "" {
					w(`<text x="%d" y="%d" fill="#888">%s</text>`+"\n", margin+labelW+4, by+barH-3, why)
					continue
				}
				bw := 0.0
				if maxV > 0 {
					bw = barW * v / maxV
				}
				w(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n",
					margin+labelW, by+1, bw, barH-2, colors[pi%len(colors)])
				w(`<text x="%.1f" y="%d">%s</text>`+"\n", float64(margin+labelW)+bw+4, by+barH-3, html.EscapeString(pn.label(v)))
			}
		}
		w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`+"\n",
			margin+labelW, y0+panelTop-4, margin+labelW, y0+panelTop+nScen*rowH-rowGap+4)
		y0 += panelH
	}
	w("</svg>\n")
	return b.String()
}

// group returns the scenario's group; results written before there were
// groups hold http1 scenarios only.
func (sc scenarioInfo) group() string {
	if sc.Group == "" {
		return groupHTTP1
	}
	return sc.Group
}

// scenariosOf returns the scenarios of one group, in report order.
func scenariosOf(res *results, group string) []scenarioInfo {
	var out []scenarioInfo
	for _, sc := range res.Scenarios {
		if sc.group() == group {
			out = append(out, sc)
		}
	}
	return out
}

// pairedOrder says in what order a paired cycle ran its proxies.
func pairedOrder(res *results) string {
	if !res.PairedMirror {
		return "in an order rotated by cycle"
	}
	return "in an order rotated by cycle and then again in the reverse order; a proxy's figure in a cycle is the mean of its two runs, " +
		"which sit, on average, at the same place in the cycle as every other proxy's, so that a drift of the machine's speed over the cycle " +
		"(a cycle at saturation slows the machine down as it goes on) falls on every proxy alike"
}

// renderPaired writes the paired phase's section, when the run has one.
func renderPaired(w func(string, ...any), res *results) {
	if res.PairedCycles == 0 || len(res.Paired) == 0 && res.PairedFailed == "" {
		return
	}
	w("## HTTP/1.1, paired runs\n\n")
	w("The machine's speed drifts by up to a quarter for tens of seconds at a time, about the gap between two proxies' slots in a round above, "+
		"so a round can measure one proxy in a slow spell and the next in a fast one. In this phase every proxy above was started once, together, "+
		"each pinned to CPU %d as before (the idle ones use next to nothing); then, in each of %s, each ran a %s wrk run (after a %s warm-up) "+
		"back to back with the others, "+pairedOrder(res)+". Two proxies' runs in one cycle are seconds apart: their ratio is taken in one "+
		"state of the machine. **vs nginx** is the median of the per-cycle ratios, with the first and third quartiles; **ahead / behind** counts "+
		"the cycles in which the proxy's req/s was above / below nginx's in the same cycle.\n\n",
		res.ProxyCPU, plural(res.PairedCycles, "cycle"), res.PairedDuration, res.PairedWarmup)
	if res.PairedFailed != "" {
		w("**The paired phase stopped early**: %s. The figures below are over the cycles it finished.\n\n", oneLine(res.PairedFailed, 400))
	}
	for _, pl := range res.Payloads {
		sums := summarizePaired(res, pl.Name, "nginx")
		if len(sums) == 0 {
			continue
		}
		w("### %s response body, paired\n\n", pl.Label)
		w("| scenario | cycles | req/s | proxy CPU µs/req | req/s vs nginx (quartiles) | ahead / behind nginx | CPU/req vs nginx (quartiles) |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, s := range sums {
			vs, ab, cpu := "—", "—", "—"
			if s.hasBase && s.scenario.Name != "nginx" {
				vs = fmt.Sprintf("%.3f× (%.3f–%.3f)", s.vsBase, s.vsLo, s.vsHi)
				ab = fmt.Sprintf("%d / %d", s.ahead, s.behind)
				cpu = fmt.Sprintf("%.3f× (%.3f–%.3f)", s.cpuVs, s.cpuLo, s.cpuHi)
			}
			w("| %s | %d | %s | %.2f | %s | %s | %s |\n", s.scenario.Label, s.cycles, thousands(s.rps), s.cpu, vs, ab, cpu)
		}
		w("\n")
		// wasmgate against every other proxy, each ratio per cycle.
		var against []string
		for _, sc := range res.Scenarios {
			if sc.Name == "wasmgate" {
				continue
			}
			for _, s := range summarizePaired(res, pl.Name, sc.Name) {
				if s.scenario.Name == "wasmgate" && s.hasBase {
					against = append(against, fmt.Sprintf("%s %.3f× (%.3f–%.3f; ahead in %d of %d cycles)",
						sc.Label, s.vsBase, s.vsLo, s.vsHi, s.ahead, s.ratioed))
				}
			}
		}
		if len(against) > 0 {
			w("wasmgate's req/s against each, as the median of per-cycle ratios (quartiles): %s.\n\n", strings.Join(against, "; "))
		}
	}
}

// groupTitles name the groups in the memory table.
var groupTitles = map[string]string{groupHTTP1: "HTTP/1.1", groupFilters: "Wasm filters", groupHTTPS: "HTTPS",
	groupH3: "HTTP/3", groupReload: "reload", groupMesh: "mesh (both proxies)"}

// renderMemory writes each proxy's memory over the rounds, from the
// samples that carry it.
func renderMemory(w func(string, ...any), res *results) {
	type row struct {
		label, group string
		kb           []float64
	}
	var rows []row
	for _, sc := range res.Scenarios {
		r := row{label: sc.Label, group: groupTitles[sc.group()]}
		for _, s := range res.Samples {
			if s.Scenario == sc.Name && s.ProxyPSSKB > 0 {
				r.kb = append(r.kb, float64(s.ProxyPSSKB))
			}
		}
		if len(r.kb) > 0 {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return
	}
	w("## Memory\n\n")
	w("Each proxy's memory, read when each of its measured runs in the rounds ended (the load stopped, the proxy still running): the proportional set size of its processes " +
		"(the `Pss` of `/proc/PID/smaps_rollup`, summed over the proxy's process group): resident memory, with the pages that processes share, such as an nginx master and its worker, " +
		"divided among them so that each counts once. Median and largest over the scenario's runs (every payload, every round), in MiB. In the mesh group it is both proxies of a pair together, " +
		"the wasmgate binary's pages once for the two (the mesh's control plane runs from a copy of the binary, so it shares none of them). " +
		"A Go program's figure includes heap its runtime has not yet given back to the system.\n\n")
	w("| scenario | group | memory (PSS), median | largest | runs |\n")
	w("| --- | --- | ---: | ---: | ---: |\n")
	for _, r := range rows {
		w("| %s | %s | %.1f MiB | %.1f MiB | %d |\n", r.label, r.group, median(r.kb)/1024, slices.Max(r.kb)/1024, len(r.kb))
	}
	w("\n")
}
