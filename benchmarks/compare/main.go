// Command compare runs the side-by-side benchmarks: one upstream, and the
// same load sent to it directly and through each proxy in turn (a bare
// fasthttp forwarder, wasmgate, nginx, HAProxy, Caddy), pinned to the same
// CPUs, over several interleaved rounds. Beside that HTTP/1.1 group, it
// measures wasmgate with Wasm filters, every proxy over HTTP/1.1 and HTTP/2
// with TLS, wasmgate and Caddy over HTTP/3, and wasmgate while its
// configuration is rewritten. It writes the raw samples to results.json and
// the medians, with their method, to RESULTS.md, results.svg and
// results-groups.svg.
//
// benchmarks/run.sh builds the binaries and runs it; see benchmarks/README.md.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// options are the command line flags.
type options struct {
	binDir      string
	root        string // the benchmarks/ directory
	scratch     string
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	connections int
	threads     int
	proxyCPU    int
	loadCPU     int
	scenarios   []string
	payloads    []string
	reportOnly  bool
	quick       bool
	maxOther    float64 // % of a pinned core used by others that triggers a retry
	retries     int     // budget of such retries; negative: a quarter of the samples
	quietWait   time.Duration
	openRate    float64       // requests per second of the open-loop run; 0: none
	openTime    time.Duration // its measured length
	nice        int           // niceness of every process the suite pins
	// The groups other than http1: their measured run and warm-up, and
	// the shape of their load.
	groupDuration  time.Duration
	groupWarmup    time.Duration
	h2Streams      int
	h3Connections  int
	h3Streams      int
	reloadInterval time.Duration

	// The paired phases: cycles of short back-to-back runs of every
	// proxied HTTP/1.1 scenario, all started once; then the same for the
	// filters group, with fixed-rate runs at pairedRate (0: none).
	pairedCycles            int
	pairedMirror            bool
	pairedDur, pairedWarmup time.Duration
	pairedRate              float64
}

// payload is one response body the upstream serves.
type payload struct {
	Name  string `json:"name"`  // as given to -payloads
	Label string `json:"label"` // for tables
	Path  string `json:"path"`
	Size  int    `json:"size"`
}

var knownPayloads = map[string]payload{
	"64":  {Name: "64", Label: "64 B", Path: "/64", Size: 64},
	"16k": {Name: "16k", Label: "16 KiB", Path: "/16k", Size: 16 << 10},
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("compare: ")
	opt, err := parseFlags(os.Args[1:])
	if err != nil {
		log.Fatal(err)
	}
	if opt.reportOnly {
		res, err := readResults(filepath.Join(opt.root, "results.json"))
		if err == nil {
			err = writeReport(opt.root, res)
		}
		if err != nil {
			log.Fatal(err)
		}
		return
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	r := &runner{opt: opt, reg: &registry{}}
	err = r.run(ctx)
	r.reg.stopAll()
	if err != nil {
		log.Fatal(err)
	}
}

func parseFlags(args []string) (options, error) {
	var opt options
	var scen, pay string
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.StringVar(&opt.binDir, "bin", "", "directory holding the built upstream, forwarder and wasmgate binaries")
	fs.StringVar(&opt.root, "root", "benchmarks", "the benchmarks/ directory: peers/ and wrk/ are read from it, RESULTS.md, results.svg and results.json written to it")
	fs.StringVar(&opt.scratch, "scratch", "", "scratch directory for configs and logs (default: a new temporary directory)")
	fs.DurationVar(&opt.duration, "duration", 10*time.Second, "measured wrk run per scenario, payload and round (whole seconds)")
	fs.DurationVar(&opt.warmup, "warmup", 2*time.Second, "unmeasured wrk run before each measured one (0: none)")
	fs.IntVar(&opt.rounds, "rounds", 3, "rounds; scenarios are interleaved within each round and medians taken across rounds")
	fs.IntVar(&opt.connections, "connections", 64, "wrk connections")
	fs.IntVar(&opt.threads, "threads", 1, "wrk threads")
	fs.IntVar(&opt.proxyCPU, "proxy-cpu", 1, "CPU the proxy is pinned to")
	fs.IntVar(&opt.loadCPU, "load-cpu", 0, "CPU wrk and the upstream are pinned to")
	fs.StringVar(&scen, "scenarios", strings.Join(groups, ","), "comma-separated scenarios, or groups of them: "+strings.Join(groups, ", "))
	fs.StringVar(&pay, "payloads", "64,16k", "comma-separated response bodies: 64, 16k")
	fs.Float64Var(&opt.maxOther, "max-other", 10, "measure a sample again when other processes used more than this % of a pinned core during it")
	fs.IntVar(&opt.retries, "retries", -1, "most samples measured again for -max-other (-1: a quarter of all samples)")
	fs.DurationVar(&opt.quietWait, "quiet-wait", 60*time.Second, "longest total time, over the run, spent waiting for the pinned cores to be idle before a measurement")
	fs.Float64Var(&opt.openRate, "open-rate", 5000, "after each wrk run, measure latency at this fixed rate with `wasmgate bench --rate` (0: skip)")
	fs.DurationVar(&opt.openTime, "open-duration", 5*time.Second, "measured length of each open-loop run (after a 1 s warm-up)")
	fs.IntVar(&opt.nice, "nice", 0, "run every pinned process (wrk, upstream, proxy, bench) at this niceness, and its session too under autogroup scheduling, e.g. -5 to favour them over other work on a shared machine (needs root below 0)")
	fs.DurationVar(&opt.groupDuration, "group-duration", 5*time.Second, "measured run per scenario and round in the groups other than http1 (whole seconds)")
	fs.DurationVar(&opt.groupWarmup, "group-warmup", time.Second, "warm-up before each measured run in the groups other than http1")
	fs.IntVar(&opt.h2Streams, "h2-streams", 10, "concurrent streams per connection of h2load (-m); its connections are -connections")
	fs.IntVar(&opt.h3Connections, "h3-connections", 16, "connections of the HTTP/3 runs (wasmgate bench -p h3)")
	fs.IntVar(&opt.h3Streams, "h3-streams", 4, "concurrent streams per connection of the HTTP/3 runs")
	fs.DurationVar(&opt.reloadInterval, "reload-interval", 100*time.Millisecond, "how often the reload scenario rewrites the configuration")
	fs.IntVar(&opt.pairedCycles, "paired", 10, "cycles of the paired phase after the rounds: every proxied http1 scenario started once, then short runs of each back to back in every cycle (0: skip)")
	fs.BoolVar(&opt.pairedMirror, "paired-mirror", true, "run each paired cycle's order forward and then backward, each proxy's figure in the cycle being the mean of its two runs, so that a drift of the machine's speed over the cycle falls on every proxy alike (doubles the phases' length)")
	fs.DurationVar(&opt.pairedDur, "paired-duration", 2*time.Second, "measured wrk run of each scenario and payload in a paired cycle (whole seconds)")
	fs.DurationVar(&opt.pairedWarmup, "paired-warmup", 500*time.Millisecond, "warm-up before each paired run")
	fs.Float64Var(&opt.pairedRate, "paired-rate", 5000, "in the filters' and the mesh's paired phases, also send each filter set (and nginx) and each pair this many requests a second with `wasmgate bench --rate`, for -paired-duration after -paired-warmup, to measure proxy CPU per request at one rate for all; keep it below every filter set's saturation (0: skip)")
	fs.BoolVar(&opt.reportOnly, "report-only", false, "regenerate RESULTS.md and results.svg from results.json, without measuring")
	fs.BoolVar(&opt.quick, "quick", false, "smoke run: 1 round of 3 s with 1 s warm-up and at most 1 paired cycle (overrides -rounds, -duration, -warmup, -paired)")
	if err := fs.Parse(args); err != nil {
		return opt, err
	}
	if fs.NArg() != 0 {
		return opt, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if opt.quick {
		opt.rounds, opt.duration, opt.warmup, opt.openTime = 1, 3*time.Second, time.Second, 2*time.Second
		opt.groupDuration, opt.groupWarmup = 2*time.Second, time.Second
		opt.pairedCycles = min(opt.pairedCycles, 1)
	}
	opt.scenarios = expandGroups(splitList(scen))
	opt.payloads = splitList(pay)
	if opt.reportOnly {
		return opt, nil
	}
	if opt.binDir == "" {
		return opt, errors.New("-bin is required")
	}
	if opt.rounds < 1 || opt.duration < time.Second || opt.connections < 1 || opt.threads < 1 || opt.warmup < 0 {
		return opt, errors.New("-rounds, -connections and -threads must be positive, -duration at least 1s")
	}
	if opt.pairedCycles < 0 || opt.pairedCycles > 0 && (opt.pairedDur < time.Second || opt.pairedWarmup < 0 || opt.pairedRate < 0) {
		return opt, errors.New("-paired must not be negative, -paired-duration at least 1s, -paired-warmup and -paired-rate not negative")
	}
	if opt.groupDuration < time.Second || opt.groupWarmup < 0 || opt.h2Streams < 1 || opt.h3Connections < 1 || opt.h3Streams < 1 || opt.reloadInterval <= 0 {
		return opt, errors.New("-group-duration must be at least 1s; -h2-streams, -h3-connections, -h3-streams and -reload-interval positive")
	}
	known := map[string]bool{}
	for _, s := range scenarios() {
		known[s.name] = true
	}
	for _, s := range opt.scenarios {
		if !known[s] {
			return opt, fmt.Errorf("-scenarios: unknown scenario %q", s)
		}
	}
	for _, p := range opt.payloads {
		if _, ok := knownPayloads[p]; !ok {
			return opt, fmt.Errorf("-payloads: unknown payload %q", p)
		}
	}
	return opt, nil
}

// expandGroups replaces each group name in names by its scenarios, and
// drops duplicates.
func expandGroups(names []string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	all := scenarios()
	for _, n := range names {
		if !contains(groups, n) {
			add(n)
			continue
		}
		for _, s := range all {
			if s.group == n {
				add(s.name)
			}
		}
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// runner holds the state of one benchmark run.
type runner struct {
	opt      options
	reg      *registry
	hz       uint64 // clock ticks per second
	upstream string // host:port
	upProc   *process
	// retriesLeft is how many samples may still be measured again because
	// other processes took a pinned core.
	retriesLeft int
	// cert is the self-signed certificate of the TLS scenarios, once made.
	cert *certFiles
	// openSkipped says why there is no open-loop run, or is empty.
	openSkipped string
	// quietLeft is how much longer, over the whole run, the suite may wait
	// for the pinned cores to be idle before a measurement.
	quietLeft time.Duration
	// mesh is the mesh group's control plane, once started.
	mesh *meshPlane
}

func (r *runner) binPath(name string) string { return filepath.Join(r.opt.binDir, name) }

func (r *runner) run(ctx context.Context) error {
	if r.opt.scratch == "" {
		dir, err := os.MkdirTemp("", "wasmgate-bench-")
		if err != nil {
			return err
		}
		r.opt.scratch = dir
	}
	// nginx's worker may run as another user: let it reach its files.
	if err := os.MkdirAll(r.opt.scratch, 0o755); err != nil {
		return err
	}
	_ = os.Chmod(r.opt.scratch, 0o755)
	r.reg.pgidFile = filepath.Join(r.opt.scratch, "pgids")
	r.reg.nice = r.opt.nice
	r.hz = clockTicks()
	r.retriesLeft = r.retryBudget()
	r.quietLeft = r.opt.quietWait

	res := &results{
		Started:     time.Now().UTC(),
		Rounds:      r.opt.rounds,
		Duration:    r.opt.duration.String(),
		Warmup:      r.opt.warmup.String(),
		Connections: r.opt.connections,
		Threads:     r.opt.threads,
		ProxyCPU:    r.opt.proxyCPU,
		LoadCPU:     r.opt.loadCPU,
		Quick:       r.opt.quick,
		Nice:        r.opt.nice,
		MaxOtherPct: r.opt.maxOther,

		GroupDuration:  r.opt.groupDuration.String(),
		GroupWarmup:    r.opt.groupWarmup.String(),
		H2Streams:      r.opt.h2Streams,
		H3Connections:  r.opt.h3Connections,
		H3Streams:      r.opt.h3Streams,
		ReloadInterval: r.opt.reloadInterval.String(),
	}
	for _, name := range r.opt.payloads {
		res.Payloads = append(res.Payloads, knownPayloads[name])
	}
	res.Env = collectEnv(r.opt.binDir, r.opt.root)
	log.Printf("scratch directory %s", r.opt.scratch)

	// Scenarios that cannot run are reported, not silently dropped.
	var active []scenario
	for _, s := range scenarios() {
		if !contains(r.opt.scenarios, s.name) {
			continue
		}
		info := scenarioInfo{Name: s.name, Label: s.label, Group: s.group, Peer: s.peer, Base: s.base}
		if why := s.missing(r); why != "" {
			info.Skipped = why
			log.Printf("skipping %s: %s", s.name, why)
		} else {
			active = append(active, s)
		}
		res.Scenarios = append(res.Scenarios, info)
	}

	if r.opt.openRate <= 0 {
		r.openSkipped = "disabled (-open-rate 0)"
	} else {
		r.openSkipped = r.benchMissing()
	}
	if r.openSkipped != "" {
		log.Printf("no open-loop runs: %s", r.openSkipped)
	} else {
		res.OpenRate = r.opt.openRate
		res.OpenDuration = r.opt.openTime.String()
	}
	res.OpenSkipped = r.openSkipped

	if err := r.startUpstream(ctx); err != nil {
		return err
	}
	for _, s := range active {
		if s.tls() {
			c, err := writeSelfSigned(r.opt.scratch)
			if err != nil {
				return fmt.Errorf("self-signed certificate: %w", err)
			}
			r.cert = &c
			break
		}
	}

	failures := map[string][]string{}
	for round := 1; round <= r.opt.rounds; round++ {
		// Rotate the order each round so that no scenario always runs
		// first, or always right after the same neighbour.
		for i := range active {
			s := active[(i+round-1)%len(active)]
			if err := ctx.Err(); err != nil {
				return err
			}
			samples, err := r.runScenario(ctx, s, round)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// A failed round leaves the scenario out of that round
				// only; the report lists every failure.
				log.Printf("round %d %s failed: %v", round, s.name, err)
				failures[s.name] = append(failures[s.name], fmt.Sprintf("round %d: %v", round, err))
				continue
			}
			res.Samples = append(res.Samples, samples...)
		}
	}
	if r.opt.pairedCycles > 0 {
		paired, err := r.runPaired(ctx, active)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Printf("paired phase failed: %v", err)
			res.PairedFailed = err.Error()
		}
		res.Paired = paired
		res.PairedCycles, res.PairedDuration, res.PairedWarmup = r.opt.pairedCycles, r.opt.pairedDur.String(), r.opt.pairedWarmup.String()
		res.PairedMirror = r.opt.pairedMirror

		rate := r.opt.pairedRate
		switch why := r.benchMissing(); {
		case rate <= 0:
			res.PairedRateSkipped = "disabled (-paired-rate 0)"
		case why != "":
			res.PairedRateSkipped = why
			rate = 0
		}
		sat, fixed, err := r.runPairedFilters(ctx, active, rate)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Printf("filters' paired phase failed: %v", err)
			res.PairedFiltersFailed = err.Error()
		}
		res.PairedFilters, res.PairedFixed, res.PairedRate = sat, fixed, rate

		sat, fixed, err = r.runPairedMesh(ctx, active, rate)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Printf("mesh paired phase failed: %v", err)
			res.PairedMeshFailed = err.Error()
		}
		res.PairedMesh, res.PairedMeshFixed = sat, fixed
	}
	for i := range res.Scenarios {
		sc := &res.Scenarios[i]
		sc.Failures = failures[sc.Name]
		if len(sc.Failures) == r.opt.rounds {
			sc.Skipped = "failed in every round; first failure: " + sc.Failures[0]
		}
	}
	res.Finished = time.Now().UTC()
	res.Retries = r.retriesUsed()
	res.Env.LoadAvgEnd = readLoadAvg()

	if err := writeResults(filepath.Join(r.opt.root, "results.json"), res); err != nil {
		return err
	}
	return writeReport(r.opt.root, res)
}

// benchMissing returns why `wasmgate bench --rate` cannot run, or "".
func (r *runner) benchMissing() string {
	if why := needBuilt("wasmgate")(r); why != "" {
		return why
	}
	return benchAvailable(r.binPath("wasmgate"))
}

// retryBudget returns how many samples may be measured again for
// -max-other: -retries, or a quarter of the samples the run takes.
func (r *runner) retryBudget() int {
	if r.opt.retries >= 0 {
		return r.opt.retries
	}
	n := 0
	for _, s := range scenarios() {
		switch {
		case !contains(r.opt.scenarios, s.name):
		case s.group == groupHTTP1:
			n += r.opt.rounds * len(r.opt.payloads)
		default:
			n += r.opt.rounds
		}
	}
	return (n + 3) / 4
}

func (r *runner) retriesUsed() int { return r.retryBudget() - r.retriesLeft }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (r *runner) startUpstream(ctx context.Context) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	dir := filepath.Join(r.opt.scratch, "upstream")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p, err := r.reg.start("upstream", filepath.Join(dir, "upstream.log"), nil,
		pinned(r.opt.loadCPU, r.opt.nice, r.binPath("upstream"), "-addr", addr)...)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, p, false, addr, "", r.payloads()); err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	r.upstream, r.upProc = addr, p
	log.Printf("upstream on %s (CPU %d)", addr, r.opt.loadCPU)
	return nil
}

func (r *runner) payloads() []payload {
	var ps []payload
	for _, name := range r.opt.payloads {
		ps = append(ps, knownPayloads[name])
	}
	return ps
}

// runScenario starts the scenario's proxy, measures every payload and
// stops the proxy. The groups other than http1 measure the first payload
// only, for -group-duration.
func (r *runner) runScenario(ctx context.Context, s scenario, round int) ([]sample, error) {
	target := r.upstream
	pls := r.payloads()
	duration, warmup := r.opt.duration, r.opt.warmup
	if s.group != groupHTTP1 {
		pls = pls[:1]
		duration, warmup = r.opt.groupDuration, r.opt.groupWarmup
	}
	var proxy *process
	var rw *rewriter
	if s.argv != nil {
		var err error
		proxy, target, rw, err = r.startProxy(ctx, s, fmt.Sprintf("%s-round%d", s.name, round), pls)
		if err != nil {
			return nil, err
		}
		defer r.reg.stop(proxy)
	}

	var out []sample
	for _, p := range pls {
		lr, url := r.loadFor(s, target, p)
		cores := []int{r.opt.loadCPU}
		if proxy != nil {
			cores = append(cores, r.opt.proxyCPU)
		}
		r.waitQuiet(ctx, cores)
		measure := func(ctx context.Context) (sample, error) {
			var smp sample
			run := func(ctx context.Context) error {
				if warmup > 0 {
					if _, _, err := lr.runFor(ctx, warmup); err != nil {
						return fmt.Errorf("warm-up: %w", err)
					}
				}
				var err error
				smp, err = r.measure(ctx, lr, duration, proxy)
				return err
			}
			if rw == nil {
				err := run(ctx)
				return smp, err
			}
			// The configuration is rewritten over the whole wrk run, its
			// warm-up included.
			applied := countReloads(proxy.logPath)
			writes, err := rewriteDuring(ctx, rw, run)
			smp.Rewrites, smp.Reloads = writes, countReloads(proxy.logPath)-applied
			return smp, err
		}
		smp, err := measure(ctx)
		if err != nil {
			return nil, err
		}
		smp.Scenario, smp.Payload, smp.Round = s.name, p.Name, round
		if other := smp.interference(); other > r.opt.maxOther && r.retriesLeft > 0 {
			// Another tenant of the machine took a pinned core: measure
			// again and keep the quieter of the two.
			r.retriesLeft--
			log.Printf("round %d %s %s: %.0f%% of a pinned core went to other processes, measuring again", round, s.name, p.Name, other)
			again, err := measure(ctx)
			if err != nil {
				return nil, err
			}
			again.Scenario, again.Payload, again.Round = s.name, p.Name, round
			if again.interference() < other {
				smp = again
			}
			smp.Attempts = 2
		}
		log.Printf("round %d %-9s %-4s %9.0f req/s  p50 %6d us  p99 %6d us  proxy %6.2f us/req (%3.0f%% CPU)  errors %d",
			round, s.name, p.Name, smp.RPS, smp.P50US, smp.P99US, smp.ProxyCPUUSPerReq, smp.ProxyCPUPct, smp.Errors)
		if rw != nil {
			log.Printf("round %d %s: %d rewrites of the configuration, %d reloads logged, %d non-2xx", round, s.name, smp.Rewrites, smp.Reloads, smp.Non2xx)
		}
		if r.openSkipped == "" && s.group == groupHTTP1 {
			if smp.Open, err = r.openLoop(ctx, s.name, p.Name, round, url); err != nil {
				return nil, err
			}
		}
		out = append(out, smp)
	}
	return out, nil
}

// startProxy starts scenario s's proxy with its configuration in the
// scratch directory dirName, and waits until it serves every payload. It
// returns the proxy, the address it listens on, and the configuration's
// rewriter when s is a reload scenario.
func (r *runner) startProxy(ctx context.Context, s scenario, dirName string, pls []payload) (*process, string, *rewriter, error) {
	dir := filepath.Join(r.opt.scratch, dirName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", nil, err
	}
	listen, err := freeAddr()
	if s.http3 && err == nil {
		listen, err = freeDualAddr()
	}
	if err != nil {
		return nil, "", nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, "", nil, err
	}
	f := s.fields(peerFields{Listen: listen, ListenHost: "127.0.0.1", Upstream: r.upstream, Admin: admin, Dir: dir}, r.cert, r.opt.binDir)
	var rw *rewriter
	cfg := ""
	if s.config != "" {
		if cfg, err = renderConfig(filepath.Join(r.opt.root, "peers"), s.config, dir, f); err != nil {
			return nil, "", nil, err
		}
	}
	if s.reload {
		if rw, err = r.reloadVariants(s, cfg, f); err != nil {
			return nil, "", nil, err
		}
	}
	var env []string
	if s.env != nil {
		env = s.env(f)
	}
	argv, err := s.argv(ctx, r, cfg, f)
	if err != nil {
		return nil, "", nil, err
	}
	proxy, err := r.reg.start(s.name, filepath.Join(dir, s.name+".log"), env, pinned(r.opt.proxyCPU, r.opt.nice, argv...)...)
	if err != nil {
		return nil, "", nil, err
	}
	if err := waitReady(ctx, proxy, s.tls(), listen, s.host, pls); err != nil {
		r.reg.stop(proxy)
		return nil, "", nil, err
	}
	return proxy, listen, rw, nil
}

// loadFor returns the load generator of scenario s for payload p at
// target, and the URL it requests.
func (r *runner) loadFor(s scenario, target string, p payload) (loadRunner, string) {
	scheme := "http://"
	if s.tls() {
		scheme = "https://"
	}
	url := scheme + target + p.Path
	switch s.load {
	case loadH2:
		return h2loadRun{cpu: r.opt.loadCPU, nice: r.opt.nice, threads: r.opt.threads, connections: r.opt.connections, streams: r.opt.h2Streams, url: url}, url
	case loadH3:
		return benchRun{bin: r.binPath("wasmgate"), cpu: r.opt.loadCPU, nice: r.opt.nice, protocol: "h3",
			connections: r.opt.h3Connections, streams: r.opt.h3Streams, url: url}, url
	}
	w := wrkRun{
		cpu:         r.opt.loadCPU,
		nice:        r.opt.nice,
		threads:     r.opt.threads,
		connections: r.opt.connections,
		script:      filepath.Join(r.opt.root, "wrk", "report.lua"),
		url:         url,
	}
	if s.host != "" {
		w.headers = append(w.headers, "Host: "+s.host)
	}
	switch s.group {
	case groupFilters:
		w.headers = append(w.headers, filterHeader)
	case groupReload:
		// Both reload scenarios count non-2xx answers in Lua, which slows
		// wrk down the same for both.
		w.script = filepath.Join(r.opt.root, "wrk", "count.lua")
	}
	return w, url
}

// reloadVariants renders the second configuration the reload scenario
// alternates with cfg (a different route name) and returns the rewriter.
func (r *runner) reloadVariants(s scenario, cfg string, f peerFields) (*rewriter, error) {
	a, err := os.ReadFile(cfg)
	if err != nil {
		return nil, err
	}
	altDir := filepath.Join(f.Dir, "alt")
	if err := os.MkdirAll(altDir, 0o755); err != nil {
		return nil, err
	}
	f.Route = "all-b"
	alt, err := renderConfig(filepath.Join(r.opt.root, "peers"), s.config, altDir, f)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(alt)
	if err != nil {
		return nil, err
	}
	return &rewriter{path: cfg, variants: [][]byte{a, b}, interval: r.opt.reloadInterval}, nil
}

// openLoop measures latency at the fixed -open-rate with wasmgate bench.
func (r *runner) openLoop(ctx context.Context, scenario, payload string, round int, url string) (*openSample, error) {
	o := openRun{
		bin:         r.binPath("wasmgate"),
		cpu:         r.opt.loadCPU,
		nice:        r.opt.nice,
		connections: r.opt.connections,
		rate:        r.opt.openRate,
		duration:    r.opt.openTime,
		warmup:      time.Second,
		url:         url,
		saveTo:      filepath.Join(r.opt.scratch, fmt.Sprintf("bench-%s-%s-round%d.json", scenario, payload, round)),
	}
	res, _, err := o.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("open loop: %w", err)
	}
	smp := &openSample{
		RPS:       res.Throughput,
		Responses: res.Responses,
		Errors:    res.Errors,
		Aborted:   res.Aborted,
		P50US:     float64(res.Latency.P50) / 1e3,
		P99US:     float64(res.Latency.P99) / 1e3,
		P999US:    float64(res.Latency.P999) / 1e3,
	}
	if res.Responses == 0 {
		log.Printf("round %d %-9s %-4s at %.0f req/s: no responses (%s)", round, scenario, payload, r.opt.openRate, orDash(res.Aborted))
	} else {
		log.Printf("round %d %-9s %-4s at %.0f req/s: %.0f req/s achieved, p50 %s, p99 %s, p99.9 %s, errors %d",
			round, scenario, payload, r.opt.openRate, res.Throughput, latency(smp.P50US), latency(smp.P99US), latency(smp.P999US), smp.Errors)
	}
	return smp, nil
}

// measure runs lr once for d and reads, around it, the CPU time of the
// proxy (nil for direct), the upstream and the load generator, and of both
// pinned cores.
func (r *runner) measure(ctx context.Context, lr loadRunner, d time.Duration, proxy *process) (sample, error) {
	var proxyBefore, proxyAfter uint64
	var err error
	if proxy != nil {
		if proxyBefore, err = groupTicks(proxy.cmd.Process.Pid); err != nil {
			return sample{}, fmt.Errorf("proxy CPU time: %w", err)
		}
	}
	start := time.Now()
	var wr loadResult
	var wrkCPU time.Duration
	m, err := r.around(func() (err error) {
		wr, wrkCPU, err = lr.runFor(ctx, d)
		return err
	})
	if err != nil {
		return sample{}, err
	}
	wall := time.Since(start).Seconds()
	if proxy != nil {
		if proxyAfter, err = groupTicks(proxy.cmd.Process.Pid); err != nil {
			return sample{}, fmt.Errorf("proxy CPU time: %w", err)
		}
	}

	hz := float64(r.hz)
	proxyTicks := float64(proxyAfter - proxyBefore)
	wrkTicks := wrkCPU.Seconds() * hz

	s := sample{
		RPS:      wr.rps(),
		Requests: wr.Requests,
		Errors:   wr.Errors,
		Non2xx:   wr.Non2xx,
		MeanUS:   wr.MeanUS,
		P50US:    wr.P50US,
		P90US:    wr.P90US,
		P99US:    wr.P99US,
		P999US:   wr.P999US,
		MaxUS:    wr.MaxUS,
		WallS:    wall,
		Attempts: 1,

		ProxyCPUPct:    100 * proxyTicks / hz / wall,
		UpstreamCPUPct: 100 * m.upTicks / hz / wall,
		WrkCPUPct:      100 * wrkTicks / hz / wall,
	}
	m.fill(&s, proxyTicks, wrkTicks, wr.Requests, hz)
	if wr.Requests > 0 && proxy != nil {
		s.ProxyCPUUSPerReq = proxyTicks * 1e6 / hz / float64(wr.Requests)
	}
	if proxy == nil {
		s.ProxyCPUPct = 0
		s.ProxyCoreUSPerReq = 0
	} else if kb, err := groupPSS(proxy.cmd.Process.Pid); err == nil {
		// Read once the load has stopped, so it takes none of the run's
		// time: the memory the proxy kept for it.
		s.ProxyPSSKB = kb
	}
	return s, nil
}

// machine is what a measured run's surroundings used over it: the
// upstream's CPU time and the times of the two pinned cores.
type machine struct {
	upTicks     float64
	load, proxy cpuTimes
}

// around runs run, reading before and after it the upstream's CPU time
// and the times of the load and proxy cores.
func (r *runner) around(run func() error) (machine, error) {
	upBefore, err := groupTicks(r.upProc.cmd.Process.Pid)
	if err != nil {
		return machine{}, fmt.Errorf("upstream CPU time: %w", err)
	}
	coresBefore, err := readCPUTimes()
	if err != nil {
		return machine{}, err
	}
	if err := run(); err != nil {
		return machine{}, err
	}
	coresAfter, err := readCPUTimes()
	if err != nil {
		return machine{}, err
	}
	upAfter, err := groupTicks(r.upProc.cmd.Process.Pid)
	if err != nil {
		return machine{}, fmt.Errorf("upstream CPU time: %w", err)
	}
	return machine{
		upTicks: float64(upAfter - upBefore),
		load:    delta(coresBefore[r.opt.loadCPU], coresAfter[r.opt.loadCPU]),
		proxy:   delta(coresBefore[r.opt.proxyCPU], coresAfter[r.opt.proxyCPU]),
	}, nil
}

// fill sets s's figures of the cores and the upstream, given the ticks
// the proxy and the load generator used (hz a second) for requests.
func (m machine) fill(s *sample, proxyTicks, loadTicks float64, requests int64, hz float64) {
	s.LoadCoreBusyPct = pct(float64(m.load.busy()), float64(m.load.total))
	s.ProxyCoreBusyPct = pct(float64(m.proxy.busy()), float64(m.proxy.total))
	s.LoadCoreOtherPct = max(0, pct(float64(m.load.task+m.load.steal)-m.upTicks-loadTicks, float64(m.load.total)))
	s.ProxyCoreOtherPct = max(0, pct(float64(m.proxy.task+m.proxy.steal)-proxyTicks, float64(m.proxy.total)))
	if requests > 0 {
		perReq := 1e6 / hz / float64(requests) // µs per tick per request
		s.UpstreamCPUUSPerReq = m.upTicks * perReq
		s.ProxyCoreUSPerReq = float64(m.proxy.busy()) * perReq
	}
}

// waitQuiet waits, within what is left of the run's budget, until other
// processes use at most -max-other of each of cores over half a second.
// The suite's own processes are idle meanwhile.
func (r *runner) waitQuiet(ctx context.Context, cores []int) {
	const step = 500 * time.Millisecond
	waited := time.Duration(0)
	for r.quietLeft > 0 {
		before, err := readCPUTimes()
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(step):
		}
		after, err := readCPUTimes()
		if err != nil {
			return
		}
		busy := 0.0
		for _, c := range cores {
			d := delta(before[c], after[c])
			busy = max(busy, pct(float64(d.task+d.steal), float64(d.total)))
		}
		if busy <= r.opt.maxOther {
			break
		}
		r.quietLeft -= step
		waited += step
	}
	if waited > 0 {
		log.Printf("waited %s for the pinned cores to be idle (%s of the budget left)", waited, r.quietLeft)
	}
}

func delta(before, after cpuTimes) cpuTimes {
	return cpuTimes{
		task:  after.task - before.task,
		irq:   after.irq - before.irq,
		steal: after.steal - before.steal,
		total: after.total - before.total,
	}
}

func pct(part, whole float64) float64 {
	if whole <= 0 {
		return 0
	}
	return 100 * part / whole
}

// waitReady polls addr, with the Host header host when it is not empty,
// until every payload comes back whole, p exits, or 20 seconds pass.
func waitReady(ctx context.Context, p *process, useTLS bool, addr, host string, payloads []payload) error {
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	scheme := "http://"
	if useTLS {
		// The suite's own self-signed certificate.
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		scheme = "https://"
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited (%v): %s", p.name, p.waitErr, p.logTail(2000))
		}
		last = checkPayloads(ctx, client, scheme+addr, host, payloads)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer on %s within 20s: %v; log: %s", p.name, addr, last, p.logTail(2000))
}

func checkPayloads(ctx context.Context, client *http.Client, base, host string, payloads []payload) error {
	for _, pl := range payloads {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+pl.Path, nil)
		if err != nil {
			return err
		}
		if host != "" {
			req.Host = host
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || n != int64(pl.Size) {
			return fmt.Errorf("GET %s: status %d, %d body bytes, want 200 and %d", pl.Path, resp.StatusCode, n, pl.Size)
		}
	}
	return nil
}

// readLoadAvg returns the first three fields of /proc/loadavg.
func readLoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func writeResults(path string, res *results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readResults(path string) (*results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &res, nil
}
