package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The mesh group measures one request through two proxies in a row, the
// path of a call between two services of a mesh: the client (wrk) calls
// orders by name at web's outbound listener; web's sidecar sends it in
// mTLS to orders' sidecar, whose inbound listener checks the caller's
// identity against the policy and hands the request to orders' app (the
// suite's upstream). Both proxies of a pair are pinned to the proxy CPU,
// as the two sidecars of one host would share it, and a pair runs as one
// process group, so its CPU time is the two proxies' together.
//
// Beside the sidecars: the same path without the mesh (two wasmgate
// proxies in a row over plain HTTP/1.1, no identity, no policy, no
// records) and two nginx over mutual TLS 1.3.

const (
	groupMesh = "mesh"
	// meshHost is the service the client calls, by name.
	meshHost = "orders"
	// meshPairCPUBudgetUS is the target for the sidecar pair's proxy CPU
	// per request.
	meshPairCPUBudgetUS = 60.0
	// meshTrustDomain is the control plane's default trust domain.
	meshTrustDomain = "wasmgate.local"
	// meshWasmNamespace is the namespace of the pair with Wasm filters.
	meshWasmNamespace = "wasm"
)

// meshScenarios returns the mesh group's scenarios.
func meshScenarios() []scenario {
	wasmgate := needBuilt("wasmgate")
	return []scenario{
		{
			name: "mesh-sidecars", label: "two wasmgate sidecars (mTLS, HTTP/2 between them, policy, records)",
			peer: "wasmgate", argv: sidecarPair, missing: wasmgate,
		},
		{
			name: "mesh-sidecars-wasm", label: "two wasmgate sidecars as above, orders' inbound through the telemetry and authz Wasm filters (one VM)",
			peer: "wasmgate", argv: sidecarPair, filters: []string{"telemetry", "authz"}, oneVM: true,
			missing: needAll(wasmgate, needBuilt(firstPartyModule)),
		},
		{
			name: "mesh-plain", label: "two wasmgate, plain HTTP/1.1 (no mesh)",
			peer: "wasmgate", config: "wasmgate.yaml", argv: plainPair, missing: wasmgate,
		},
		{
			name: "mesh-nginx", label: "two nginx (mutual TLS 1.3, HTTP/1.1 between them, access logs)",
			peer: "nginx", argv: nginxPair, missing: needBinary("nginx"),
		},
	}
}

// addMeshScenarios completes the mesh group's scenarios and appends them.
func addMeshScenarios(out []scenario) []scenario {
	for _, s := range meshScenarios() {
		s.group, s.load, s.host, s.base = groupMesh, loadWrk, meshHost, "mesh-plain"
		out = append(out, s)
	}
	return out
}

// meshPlane is the control plane the sidecars of every round share:
// `wasmgate controlplane --mesh` on the load CPU, with a join token file
// per service and a policy that lets web call orders.
type meshPlane struct {
	proc   *process
	api    string            // https://host:port
	bundle string            // the trust bundle, PEM
	tokens map[string]string // namespace/service -> join token file
}

// meshPlane starts the control plane on first use.
func (r *runner) meshPlane(ctx context.Context) (*meshPlane, error) {
	if r.mesh != nil {
		return r.mesh, nil
	}
	dir := filepath.Join(r.opt.scratch, "controlplane")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	secret, adminToken := make([]byte, 32), make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	if _, err := rand.Read(adminToken); err != nil {
		return nil, err
	}
	keyFile, tokensFile, ctlToken := filepath.Join(dir, "secret.key"), filepath.Join(dir, "tokens"), filepath.Join(dir, "admin.token")
	for path, b := range map[string]string{
		keyFile:    base64.StdEncoding.EncodeToString(secret) + "\n",
		tokensFile: "admin bench " + hex.EncodeToString(adminToken) + "\n",
		ctlToken:   hex.EncodeToString(adminToken) + "\n",
	} {
		if err := os.WriteFile(path, []byte(b), 0o600); err != nil {
			return nil, err
		}
	}
	var addrs [3]string
	for i := range addrs {
		var err error
		if addrs[i], err = freeAddr(); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	// The control plane runs from a copy of the binary: pages of one file
	// mapped by two processes are shared, and the memory table divides
	// them between the proxy measured and the control plane (groupPSS).
	bin := filepath.Join(dir, "wasmgate-controlplane")
	if err := copyFile(r.binPath("wasmgate"), bin); err != nil {
		return nil, err
	}
	argv := pinned(r.opt.loadCPU, r.opt.nice, bin, "controlplane", "--mesh",
		"--secret-key-file", keyFile, "--token-file", tokensFile, "--data-dir", data,
		"--listen", addrs[0], "--etcd-listen-client", addrs[1], "--etcd-listen-peer", addrs[2], "--log-format", "json")
	proc, err := r.reg.start("controlplane", filepath.Join(dir, "controlplane.log"), nil, argv...)
	if err != nil {
		return nil, err
	}
	m := &meshPlane{proc: proc, api: "https://" + addrs[0], bundle: filepath.Join(data, "trust-bundle.pem"), tokens: map[string]string{}}
	fail := func(err error) (*meshPlane, error) {
		r.reg.stop(proc)
		return nil, fmt.Errorf("control plane: %w; log: %s", err, proc.logTail(2000))
	}
	ctl := func(args ...string) ([]byte, error) {
		full := append([]string{"ctl", "--server", m.api, "--ca", m.bundle, "--token-file", ctlToken}, args...)
		out, err := exec.CommandContext(ctx, r.binPath("wasmgate"), full...).Output()
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("wasmgate ctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
		}
		return out, err
	}
	// The first token waits for the API and its CA.
	deadline := time.Now().Add(60 * time.Second)
	for _, id := range []string{"default/web", "default/orders", meshWasmNamespace + "/web", meshWasmNamespace + "/orders"} {
		ns, svc, _ := strings.Cut(id, "/")
		for {
			out, err := ctl("token", "create", "--namespace", ns, "--service-account", svc, "--uses", "1000", "--ttl", "24h")
			if err == nil {
				m.tokens[id] = filepath.Join(dir, ns+"-"+svc+".token")
				if err := os.WriteFile(m.tokens[id], out, 0o600); err != nil {
					return fail(err)
				}
				break
			}
			if proc.exited() || time.Now().After(deadline) {
				return fail(err)
			}
			select {
			case <-ctx.Done():
				return fail(ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	policy := filepath.Join(dir, "policy.yaml")
	doc := "authorization_policies:\n"
	for _, ns := range []string{"default", meshWasmNamespace} {
		doc += fmt.Sprintf("  - name: orders-callers-%s\n    namespace: %s\n    service: orders\n"+
			"    rules:\n      - from:\n          - principals: [spiffe://%s/ns/%s/sa/web]\n", ns, ns, meshTrustDomain, ns)
	}
	if err := os.WriteFile(policy, []byte(doc), 0o644); err != nil {
		return fail(err)
	}
	if _, err := ctl("mesh", "apply", "-f", policy); err != nil {
		return fail(err)
	}
	log.Printf("mesh control plane on %s (CPU %d)", m.api, r.opt.loadCPU)
	r.mesh = m
	return m, nil
}

// sidecarPair is web's and orders' sidecars, `wasmgate run --sidecar`
// each, as the mesh's demo runs them: orders' app is the suite's upstream;
// web's outbound listener is f.Listen. Their records (access, decision,
// flow, event) go to a file. f.Plugins, when set, are orders' inbound
// filters, from its --local-config.
func sidecarPair(ctx context.Context, r *runner, _ string, f peerFields) ([]string, error) {
	m, err := r.meshPlane(ctx)
	if err != nil {
		return nil, err
	}
	upstreamPort, err := portOf(f.Upstream)
	if err != nil {
		return nil, err
	}
	telemetry := filepath.Join(f.Dir, "telemetry.yaml")
	doc := "telemetry:\n  sinks:\n  - {name: file, type: file, file: {path: " + filepath.Join(f.Dir, "records.log") + "}}\n" +
		"  access: [file]\n  decision: [file]\n  flow: [file]\n  event: [file]\n"
	if err := os.WriteFile(telemetry, []byte(doc), 0o644); err != nil {
		return nil, err
	}
	// The pair with filters is in a namespace of its own: both pairs run
	// at once in the paired phase, and web calls its own namespace's
	// orders (registered under orders.NAMESPACE), never the other pair's.
	ordersLocal, filters, ns := telemetry, "", "default"
	if len(f.Plugins) > 0 {
		ns = meshWasmNamespace
		var b strings.Builder
		b.WriteString(doc + "plugins:\n")
		var names []string
		for _, p := range f.Plugins {
			fmt.Fprintf(&b, "- name: %s\n  file: %s\n", p.Name, p.File)
			if p.VMID != "" {
				fmt.Fprintf(&b, "  vm_id: %s\n  root_id: %s\n", p.VMID, p.RootID)
			}
			if p.Config != "" {
				fmt.Fprintf(&b, "  config: %s\n", p.Config)
			}
			names = append(names, p.Name)
		}
		ordersLocal, filters = filepath.Join(f.Dir, "orders-local.yaml"), strings.Join(names, ",")
		if err := os.WriteFile(ordersLocal, []byte(b.String()), 0o644); err != nil {
			return nil, err
		}
	}
	var cmds [][]string
	for _, svc := range []struct {
		name, calls, outbound, local, filters string
		appPort                               int
	}{{"orders", "", "", ordersLocal, filters, upstreamPort}, {"web", meshHost, f.Listen, telemetry, "", 0}} {
		inbound, err := freeAddr()
		if err != nil {
			return nil, err
		}
		if svc.outbound == "" {
			if svc.outbound, err = freeAddr(); err != nil {
				return nil, err
			}
		}
		if svc.appPort == 0 { // web's app is not called in this path
			a, err := freeAddr()
			if err != nil {
				return nil, err
			}
			if svc.appPort, err = portOf(a); err != nil {
				return nil, err
			}
		}
		own := filepath.Join(f.Dir, svc.name)
		argv := []string{r.binPath("wasmgate"), "run", "--sidecar", "--service", svc.name, "--app-port", strconv.Itoa(svc.appPort),
			"--inbound", inbound, "--outbound", svc.outbound,
			"--namespace", ns, "--identity-server", m.api, "--join-token-file", m.tokens[ns+"/"+svc.name], "--trust-bundle-file", m.bundle,
			"--identity-dir", filepath.Join(own, "identity"), "--wasm-cache-dir", filepath.Join(own, "wasm"),
			"--cache-file", filepath.Join(own, "cache"), "--access-log", "", "--admin", "off", "--local-config", svc.local}
		if svc.calls != "" {
			argv = append(argv, "--calls", svc.calls)
		}
		if svc.filters != "" {
			argv = append(argv, "--inbound-filters", svc.filters)
		}
		cmds = append(cmds, argv)
	}
	return shellPair(cmds...), nil
}

// plainPair is two wasmgate proxies in a row over plain HTTP/1.1, each
// with the http1 group's configuration: the outer on f.Listen (cfg, which
// startProxy rendered), forwarding to the inner, which forwards to the
// upstream.
func plainPair(_ context.Context, r *runner, _ string, f peerFields) ([]string, error) {
	inner, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var cfgs []string
	for _, side := range []struct {
		name, listen, upstream string
	}{{"outer", f.Listen, inner}, {"inner", inner, f.Upstream}} {
		g := f
		g.Listen, g.Upstream, g.Dir = side.listen, side.upstream, filepath.Join(f.Dir, side.name)
		if g.Admin, err = freeAddr(); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(g.Dir, 0o755); err != nil {
			return nil, err
		}
		cfg, err := renderConfig(filepath.Join(r.opt.root, "peers"), "wasmgate.yaml", g.Dir, g)
		if err != nil {
			return nil, err
		}
		cfgs = append(cfgs, cfg)
	}
	return shellPair(
		[]string{r.binPath("wasmgate"), "run", "-c", cfgs[1]},
		[]string{r.binPath("wasmgate"), "run", "-c", cfgs[0]},
	), nil
}

// nginxPair is two nginx, each one worker: the outbound takes the client's
// HTTP/1.1 on f.Listen and sends it over mutual TLS 1.3 (connections kept
// alive) to the inbound, which verifies the client's certificate and
// passes the request to the upstream. Both write an access log line per
// request, as the sidecars write their records.
func nginxPair(_ context.Context, r *runner, _ string, f peerFields) ([]string, error) {
	certs, err := writeMutualTLS(f.Dir)
	if err != nil {
		return nil, err
	}
	inbound, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var cmds [][]string
	for _, side := range []struct {
		name, listen, upstream string
	}{{"inbound", inbound, f.Upstream}, {"outbound", f.Listen, inbound}} {
		g := f
		g.Listen, g.Upstream, g.Dir, g.Mutual = side.listen, side.upstream, filepath.Join(f.Dir, side.name), &certs
		if err := os.MkdirAll(g.Dir, 0o755); err != nil {
			return nil, err
		}
		cfg, err := renderConfig(filepath.Join(r.opt.root, "peers"), "nginx-mesh-"+side.name+".conf", g.Dir, g)
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, []string{"nginx", "-p", g.Dir, "-c", cfg, "-e", filepath.Join(g.Dir, "nginx-error.log")})
	}
	return shellPair(cmds...), nil
}

// shellPair returns the argv of a shell that runs every command in the
// background and waits for them: the commands share the shell's process
// group, so the suite measures and stops them together, and a pinned
// shell's children inherit its CPU.
func shellPair(cmds ...[]string) []string {
	var script []string
	for _, c := range cmds {
		q := make([]string, len(c))
		for i, a := range c {
			q[i] = shellQuote(a)
		}
		script = append(script, strings.Join(q, " ")+" &")
	}
	return []string{"sh", "-c", strings.Join(append(script, "wait"), "\n")}
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func portOf(addr string) (int, error) {
	i := strings.LastIndexByte(addr, ':')
	p, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil || p <= 0 {
		return 0, fmt.Errorf("%q has no port", addr)
	}
	return p, nil
}

// renderMesh writes the mesh group's section: its rounds, its paired
// phase, and the target judged on the paired phase.
func renderMesh(w func(string, ...any), res *results, pl payload, common string) {
	sums := summarize(res, groupMesh, pl.Name)
	w("## Mesh: one request through two proxies\n\n")
	w("The path of a call between two services of a mesh: the client calls `orders` by name (`Host: %s`) at the first proxy, which sends it to the second, "+
		"which hands it to the app (the suite's upstream). **Two wasmgate sidecars**: web's and orders' `wasmgate run --sidecar`, with workload certificates from a "+
		"`wasmgate controlplane --mesh` (pinned to the load CPU, idle during the runs), orders' endpoint found through its registry, HTTP/2 over mutual TLS 1.3 "+
		"between them (the default), an authorization policy that admits web's SPIFFE ID checked on every request at orders' inbound, and their records "+
		"(access, decision, flow, event) written to a file as JSON lines. **Two wasmgate, plain HTTP/1.1** is the same path without the mesh: "+
		"two `wasmgate run` with the http1 group's configuration, one forwarding to the other; no TLS, no identity, no policy, no records. "+
		"**Two nginx** stand in for the sidecars: HTTP/1.1 over mutual TLS 1.3 between them (P-256 certificates, connections and sessions kept), "+
		"an access log line per request at each. **Two wasmgate sidecars, orders' inbound through Wasm filters** adds, after the policy, the first-party "+
		"telemetry and authz filters from one VM (`plugins/firstparty/firstparty.wasm`, the filters group's configurations) as the sidecar's "+
		"`--inbound-filters`; its two services are in a namespace of their own, so that neither pair's web calls the other's orders when both run. "+
		"Both proxies of a pair are pinned to CPU %d, as two sidecars on one host share it; "+
		"**pair CPU** is the CPU time of both, per request. %s; wrk, %d connections, keep-alive.\n\n",
		meshHost, res.ProxyCPU, strings.ToUpper(common[:1])+common[1:], res.Connections)
	w("| path | req/s | p50 | p99 | pair CPU µs/req | pair CPU | req/s vs no mesh | CPU/req vs no mesh | errors | others' CPU |\n")
	w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range sums {
		if !s.hasFigures {
			w("| %s |%s not run |\n", s.scenario.Label, strings.Repeat(" — |", 8))
			continue
		}
		cpu, pct := cpuCells(s)
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %d | %.0f%% |\n", s.scenario.Label, thousands(s.rps), latency(s.p50), latency(s.p99),
			cpu, pct, ratio(s.vsBase), cpuRatio(sums, s), s.errors, s.others)
	}
	w("\n")

	var scens []scenarioInfo
	for _, sc := range res.Scenarios {
		if sc.group() == groupMesh {
			scens = append(scens, sc)
		}
	}
	sat := pairSummaries(scens, res.PairedMesh, res.PairedCycles, pl.Name, "mesh-plain")
	side, ok := findPaired(sat, "mesh-sidecars")
	if !ok || len(sat) < 2 {
		if res.PairedMeshFailed != "" {
			w("The mesh's paired phase failed before it measured anything: %s.\n\n", oneLine(res.PairedMeshFailed, 400))
		}
		if s, ok := findSummary(sums, "mesh-sidecars"); ok {
			w("Target (issue 18), the sidecar pair costs at most %.0f µs of proxy CPU per request: %s, %.2f µs (median over rounds at saturation; "+
				"there was no paired phase of the mesh in this run).\n\n", meshPairCPUBudgetUS, metOrNot(s.cpuPerReq <= meshPairCPUBudgetUS), s.cpuPerReq)
		}
		return
	}
	fixed := pairSummaries(scens, res.PairedMeshFixed, res.PairedCycles, pl.Name, "mesh-plain")
	vsNginx := pairSummaries(scens, res.PairedMesh, res.PairedCycles, pl.Name, "mesh-nginx")
	fixedVsNginx := pairSummaries(scens, res.PairedMeshFixed, res.PairedCycles, pl.Name, "mesh-nginx")
	rate := thousands(res.PairedRate)

	w("### Mesh, paired runs\n\n")
	w("As the filters' paired phase: every pair above started once, together; in each of %s, each pair ran a %s wrk run (after a %s warm-up) back to back with the others, "+
		"%s", plural(res.PairedCycles, "cycle"), res.PairedDuration, res.PairedWarmup, pairedOrder(res))
	if len(fixed) > 0 {
		w(", and then was sent a fixed %s req/s by `wasmgate bench --rate` (open loop, %d connections) for %s after a %s warm-up", rate, res.Connections, res.PairedDuration, res.PairedWarmup)
	}
	w(". Figures are medians over cycles with the first and third quartiles; differences and ratios are taken within each cycle. At saturation the two proxies of a pair " +
		"wake each other less often than once a request (HTTP/2 between the sidecars carries many requests per read and write); at the fixed rate, with the core idle between " +
		"requests, each request pays for waking both, which on this paravirtualised VM is dear for every pair alike (see the filters' paired phase).\n\n")
	if res.PairedMeshFailed != "" {
		w("**The mesh's paired phase stopped early**: %s. The figures below are over the cycles it finished.\n\n", oneLine(res.PairedMeshFailed, 400))
	}
	table := func(title string, sums, ng []pairedSummary) {
		w("#### %s\n\n", title)
		w("| path | cycles | req/s | pair CPU µs/req (quartiles) | pair CPU | over no mesh, µs (quartiles) | CPU/req vs nginx pair (quartiles) | errors | others' CPU |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, sc := range scens {
			s, ok := findPaired(sums, sc.Name)
			if !ok {
				w("| %s | — | — | — | — | — | — | — | not run |\n", sc.Label)
				continue
			}
			over, vs := "—", "—"
			if s.hasBase && sc.Name != "mesh-plain" {
				over = fmt.Sprintf("%+.2f (%+.2f to %+.2f)", s.over, s.overLo, s.overHi)
			}
			if n, ok := findPaired(ng, sc.Name); ok && n.hasBase && sc.Name != "mesh-nginx" {
				vs = fmt.Sprintf("%.3f× (%.3f–%.3f)", n.cpuVs, n.cpuLo, n.cpuHi)
			}
			w("| %s | %d | %s | %.2f (%.2f–%.2f) | %.0f%% | %s | %s | %d | %.0f%% |\n", sc.Label, s.cycles, thousands(s.rps), s.cpu, s.cpuQ1, s.cpuQ3,
				s.cpuPct, over, vs, s.errors, s.others)
		}
		w("\n")
	}
	table("At saturation (wrk)", sat, vsNginx)
	if len(fixed) > 0 {
		table(fmt.Sprintf("At a fixed %s req/s (`wasmgate bench --rate`)", rate), fixed, fixedVsNginx)
	}

	w("**Target (issue 18), judged on these paired runs**: one request through the two sidecars costs the pair at most %.0f µs of proxy CPU: ", meshPairCPUBudgetUS)
	parts := []string{fmt.Sprintf("at saturation %s, %.2f µs (%.2f–%.2f)", metOrNot(side.cpu <= meshPairCPUBudgetUS), side.cpu, side.cpuQ1, side.cpuQ3)}
	if f, ok := findPaired(fixed, "mesh-sidecars"); ok {
		below := ""
		if f.rps < 0.97*res.PairedRate {
			below = fmt.Sprintf(", but at %s req/s, below the rate", thousands(f.rps))
		}
		parts = append(parts, fmt.Sprintf("at the fixed %s req/s (with the wake-ups of an idle core) %s, %.2f µs (%.2f–%.2f)%s", rate, metOrNot(f.cpu <= meshPairCPUBudgetUS), f.cpu, f.cpuQ1, f.cpuQ3, below))
	}
	w("%s.", strings.Join(parts, "; "))
	if n, ok := findPaired(sat, "mesh-nginx"); ok {
		w(" The nginx pair, measured the same way: %.2f µs at saturation", n.cpu)
		if nf, ok := findPaired(fixed, "mesh-nginx"); ok {
			w(", %.2f at the fixed rate", nf.cpu)
		}
		w(".")
	}
	// The issue asks for the pair "with the authz and telemetry filters
	// on": the sidecars' own (the native policy and the records) above,
	// and here the first-party Wasm filters as well.
	if wf, ok := findPaired(sat, "mesh-sidecars-wasm"); ok {
		w(" With orders' inbound through the first-party telemetry and authz Wasm filters as well: at saturation %s, %.2f µs (%.2f–%.2f)",
			metOrNot(wf.cpu <= meshPairCPUBudgetUS), wf.cpu, wf.cpuQ1, wf.cpuQ3)
		if ff, ok := findPaired(fixed, "mesh-sidecars-wasm"); ok {
			w("; at the fixed rate %s, %.2f µs (%.2f–%.2f)", metOrNot(ff.cpu <= meshPairCPUBudgetUS), ff.cpu, ff.cpuQ1, ff.cpuQ3)
		}
		w(".")
	}
	w("\n\n")
}

// copyFile copies the executable src to dst.
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
