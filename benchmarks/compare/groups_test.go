package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseH2load(t *testing.T) {
	out, err := os.ReadFile(filepath.Join("testdata", "h2load.txt"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseH2load(out)
	if err != nil {
		t.Fatal(err)
	}
	want := loadResult{Requests: 10388, DurationUS: 1000000, MaxUS: 5970, MeanUS: 694}
	if r != want {
		t.Errorf("parsed %+v, want %+v", r, want)
	}
	if got := r.rps(); got != 10388 {
		t.Errorf("rps = %v", got)
	}

	failing := strings.NewReplacer(
		"10388 succeeded, 0 failed, 0 errored, 0 timeout", "10380 succeeded, 8 failed, 3 errored, 2 timeout",
		"10388 2xx, 0 3xx, 0 4xx, 0 5xx", "10383 2xx, 0 3xx, 1 4xx, 4 5xx",
	).Replace(string(out))
	r, err = parseH2load([]byte(failing))
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 10380 || r.Errors != 10 || r.Non2xx != 5 {
		t.Errorf("with failures: %+v", r)
	}

	for name, bad := range map[string]string{
		"empty":        "",
		"no summary":   "starting benchmark...\nspawning thread #0\n",
		"bad counts":   strings.Replace(string(out), "0 failed", "x failed", 1),
		"bad duration": strings.Replace(string(out), "finished in 1.00s", "finished in soon", 1),
	} {
		if _, err := parseH2load([]byte(bad)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestH2loadArgv(t *testing.T) {
	h := h2loadRun{cpu: 0, nice: -5, threads: 1, connections: 64, streams: 10, url: "https://x/64"}
	got := strings.Join(h.argv(4500*time.Millisecond), " ")
	want := "nice -n -5 taskset -c 0 h2load -t 1 -c 64 -m 10 -D 5 https://x/64"
	if got != want {
		t.Errorf("argv = %q, want %q", got, want)
	}
}

func TestParseBench(t *testing.T) {
	out := []byte(`{"protocol": "h3", "connections": 16, "streams": 4, "elapsed_ns": 5000000000,
		"responses": 50010, "errors": 3, "throughput_rps": 10002,
		"latency": {"mean_ns": 6200000, "p50_ns": 6000000, "p90_ns": 8000000, "p99_ns": 12000000, "p99_9_ns": 20000000, "max_ns": 31000000},
		"status": {"200": 50000, "503": 10}, "errors_by_kind": {"reset": 3}}`)
	r, err := parseBench(out)
	if err != nil {
		t.Fatal(err)
	}
	want := loadResult{Requests: 50000, DurationUS: 5000000, P50US: 6000, P90US: 8000, P99US: 12000, P999US: 20000, MaxUS: 31000,
		MeanUS: 6200, Errors: 13, Non2xx: 10}
	if r != want {
		t.Errorf("parsed %+v, want %+v", r, want)
	}
	if math.Abs(r.rps()-10000) > 1e-9 {
		t.Errorf("rps = %v", r.rps())
	}
	if _, err := parseBench([]byte(`{"responses": 0, "errors": 1, "aborted": "QUIC handshake: timeout"}`)); err == nil {
		t.Error("a run without a response: want an error")
	}
	if _, err := parseBench([]byte("wasmgate: target down")); err == nil {
		t.Error("output that is not JSON: want an error")
	}
}

func TestBenchArgv(t *testing.T) {
	b := benchRun{bin: "/b/wasmgate", cpu: 0, protocol: "h3", connections: 16, streams: 4, url: "https://x/64"}
	got := strings.Join(b.argv(5*time.Second), " ")
	want := "taskset -c 0 /b/wasmgate bench -o json -q -k -p h3 -c 16 --streams 4 -d 5s https://x/64"
	if got != want {
		t.Errorf("argv = %q, want %q", got, want)
	}
}

func TestWrkArgvHeaders(t *testing.T) {
	w := wrkRun{cpu: 0, threads: 1, connections: 64, duration: 5 * time.Second, script: "c.lua", headers: []string{filterHeader}, url: "https://x/64"}
	got := strings.Join(w.argv(), " ")
	want := "taskset -c 0 wrk -t 1 -c 64 -d 5s --timeout 5s --latency -s c.lua -H " + filterHeader + " https://x/64"
	if got != want {
		t.Errorf("argv = %q, want %q", got, want)
	}
}

func TestParseWrkNon2xx(t *testing.T) {
	r, err := parseWrk([]byte(`WRKJSON {"requests":10,"duration_us":1000000,"bytes":1,"p50_us":1,"p90_us":1,"p99_us":1,"p999_us":1,"max_us":1,"mean_us":1.0,"err_connect":0,"err_read":1,"err_write":0,"err_status":2,"err_timeout":0,"non2xx":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if l := r.load(); l.Non2xx != 3 || l.Errors != 3 || l.Requests != 10 {
		t.Errorf("load() = %+v", l)
	}
}

func TestExpandGroups(t *testing.T) {
	got := expandGroups([]string{"nginx", "h3", "reload", "h3-caddy"})
	want := []string{"nginx", "h3-wasmgate", "h3-caddy", "reload-off", "reload-on"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("expandGroups = %v, want %v", got, want)
	}
	all := expandGroups(groups)
	if len(all) != len(scenarios()) {
		t.Errorf("every group expands to %d scenarios, want all %d", len(all), len(scenarios()))
	}
	for _, s := range scenarios() {
		if !contains(groups, s.group) {
			t.Errorf("%s: unknown group %q", s.name, s.group)
		}
		if s.base != "" && !contains(all, s.base) {
			t.Errorf("%s: unknown base %q", s.name, s.base)
		}
	}
}

func TestWriteSelfSigned(t *testing.T) {
	dir := t.TempDir()
	f, err := writeSelfSigned(dir)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := cert.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	both, err := os.ReadFile(f.CertKey)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for rest := both; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		types = append(types, b.Type)
	}
	if strings.Join(types, ",") != "CERTIFICATE,PRIVATE KEY" {
		t.Errorf("%s holds %v", f.CertKey, types)
	}
}

func TestRewriter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cfg.yaml")
	if err := os.WriteFile(path, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := &rewriter{path: path, variants: [][]byte{[]byte("a"), []byte("b")}, interval: 5 * time.Millisecond}
	seen := map[string]bool{}
	n, err := rewriteDuring(context.Background(), w, func(context.Context) error {
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && !(seen["a"] && seen["b"]) {
			b, err := os.ReadFile(path)
			if err != nil {
				return err // a reader never finds the file missing
			}
			seen[string(b)] = true
			time.Sleep(time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 1 || !seen["b"] {
		t.Errorf("%d rewrites, contents seen %v", n, seen)
	}
	for c := range seen {
		if c != "a" && c != "b" {
			t.Errorf("a reader saw %q: the rewrite is not atomic", c)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left %d files in the directory, want 1", len(entries))
	}
}

func TestCountReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wasmgate.log")
	log := "INFO\tconfiguration reloaded\t{\"version\": \"1\"}\nWARN\tsomething\nINFO\tconfiguration reloaded\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := countReloads(path); n != 2 {
		t.Errorf("countReloads = %d, want 2", n)
	}
	if n := countReloads(filepath.Join(t.TempDir(), "missing")); n != 0 {
		t.Errorf("countReloads of a missing file = %d", n)
	}
}

func TestFreeDualAddr(t *testing.T) {
	addr, err := freeDualAddr()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Fatal(err)
	}
}

// groupResults holds one round of every group other than http1.
func groupResults() *results {
	res := testResults()
	res.GroupDuration, res.GroupWarmup, res.H2Streams, res.H3Connections, res.H3Streams, res.ReloadInterval = "5s", "1s", 10, 16, 4, "100ms"
	for _, s := range scenarios() {
		if s.group != groupHTTP1 {
			res.Scenarios = append(res.Scenarios, scenarioInfo{Name: s.name, Label: s.label, Group: s.group, Peer: s.peer, Base: s.base})
		}
	}
	add := func(name string, rps, cpu, pct float64) *sample {
		res.Samples = append(res.Samples, sample{Scenario: name, Payload: "64", Round: 1, RPS: rps, P50US: 900, P99US: 3000,
			MeanUS: 1000, ProxyCPUUSPerReq: cpu, ProxyCPUPct: pct})
		return &res.Samples[len(res.Samples)-1]
	}
	add("filter-none", 40000, 20, 80)
	add("filter-hello", 35000, 24, 84)
	add("filter-authz", 20000, 45, 90)
	// h2load gives no percentiles.
	h2 := add("h2-wasmgate", 10000, 95, 95)
	h2.P50US, h2.P99US = 0, 0
	add("h2-nginx", 28000, 22, 62)
	add("https-nginx", 27000, 21, 57)
	add("h3-wasmgate", 7000, 76, 53)
	add("h3-caddy", 5000, 170, 87)
	add("reload-off", 19000, 36, 69)
	on := add("reload-on", 18000, 38, 70)
	on.Rewrites, on.Reloads, on.Non2xx, on.Errors = 50, 48, 2, 1
	return res
}

func TestReportGroups(t *testing.T) {
	res := groupResults()
	md := renderMarkdown(res)
	for _, want := range []string{
		"## Wasm filters (HTTP/1.1)",
		"| hello (minimal Go filter) | 35,000 | 900 µs | 3.00 ms | 24.00 | 84% | 0.88× | +4.00 | 0 | 0% |",
		"| no filter | 40,000 | 900 µs | 3.00 ms | 20.00 | 80% | 1.00× | — | 0 | 0% |",
		"| encryption | — | — | — | — | — | — | — | — | not run |",
		"Target (issue 4), a minimal Go filter costs at most 5 µs of proxy CPU per request and keeps at least 0.8× the no-filter throughput: **met**.",
		"| wasmgate, HTTP/2 + TLS | 10,000 | — | — | 1.00 ms | 95.00 | 95% | 0.36× | 4.32× | 0 | 0% |",
		"Target (issue 6), HTTP/2 throughput at least nginx's with the same cores: **not met**. wasmgate 10,000 req/s, nginx 28,000 req/s: 0.36×.",
		"Target (issue 6), HTTP/3 throughput at least 1.2× Caddy's: **met**. wasmgate 7,000 req/s, Caddy 5,000 req/s: 1.40×.",
		"| wasmgate, config rewritten every 100 ms | 18,000 | 900 µs | 3.00 ms | 38.00 | 70% | 0.95× | 50 | 48 | 1 | 2 | 0% |",
		"Reload under load (issue 8): **3 failed requests** over 50 rewrites of the configuration; req/s 0.95× the no-reload run's.",
		"](results-groups.svg)",
		"5s after a 1s warm-up",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
	// The HTTP/1.1 tables hold the HTTP/1.1 scenarios only.
	if n := len(summarize(res, groupHTTP1, "64")); n != 3 {
		t.Errorf("http1 summaries: %d, want 3", n)
	}

	svg := renderGroupsSVG(res)
	if !strings.HasPrefix(svg, "<svg ") || !strings.HasSuffix(svg, "</svg>\n") {
		t.Fatal("results-groups.svg is not one svg element")
	}
	for _, want := range []string{">Wasm filters, HTTP/1.1<", ">35,000<", ">24.00 µs<", ">not run<", ">HTTP/3<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("results-groups.svg lacks %q", want)
		}
	}

	dir := t.TempDir()
	if err := writeReport(dir, res); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "results-groups.svg")); err != nil {
		t.Error(err)
	}
	// A run without those groups removes a stale plot.
	if err := writeReport(dir, testResults()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "results-groups.svg")); !os.IsNotExist(err) {
		t.Errorf("results-groups.svg left from an earlier run: %v", err)
	}
	if strings.Contains(renderMarkdown(testResults()), "results-groups.svg") {
		t.Error("a run without the groups links their plot")
	}
}

func TestHelloTargetNotMet(t *testing.T) {
	res := groupResults()
	for i := range res.Samples {
		if res.Samples[i].Scenario == "filter-hello" {
			res.Samples[i].ProxyCPUUSPerReq = 57
			res.Samples[i].RPS = 17000
		}
	}
	md := renderMarkdown(res)
	for _, want := range []string{"throughput: **not met**.", "adds 37.00 µs of proxy CPU per request (over the budget)", "keeps 0.42× the no-filter req/s (below 0.8×)"} {
		if !strings.Contains(md, want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
}
