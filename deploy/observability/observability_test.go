// Package observability holds the Grafana dashboard and the Prometheus
// alert rules of wasmgate; its tests check them with promtool, against the
// metric names the code defines, and with a real Prometheus scraping a
// proxy's metrics endpoint.
package observability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/internal/testaddr"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.yaml.in/yaml/v3"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (Debian package prometheus)", name)
	}
	return p
}

// TestAlertRules checks the rules with promtool and runs their unit
// tests, and checks that every alert has a test.
func TestAlertRules(t *testing.T) {
	promtool := lookTool(t, "promtool")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert string }
		}
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
			} `yaml:"alert_rule_test"`
		}
	}
	readYAML(t, "alerts.yml", &rules)
	readYAML(t, "alerts_test.yml", &tests)
	tested := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			tested[a.Alertname] = true
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if !tested[r.Alert] {
				t.Errorf("alert %s has no unit test in alerts_test.yml", r.Alert)
			}
		}
	}
	if n < 5 {
		t.Errorf("%d alerts, want at least the five of the issue", n)
	}
}

func readYAML(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

var metricName = regexp.MustCompile(`wasmgate_[a-z0-9_]+`)

// knownMetrics are the metric names the module's code defines: every
// "wasmgate_..." string literal in its non-test Go files.
func knownMetrics(t *testing.T) map[string]bool {
	t.Helper()
	root := "../.."
	known := map[string]bool{}
	quoted := regexp.MustCompile(`"(wasmgate_[a-z0-9_]+)"`)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "sdk" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range quoted.FindAllSubmatch(b, -1) {
			known[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return known
}

// referenced returns the metric names an expression uses, without the
// suffixes of a histogram's series.
func referenced(expr string) []string {
	var out []string
	for _, m := range metricName.FindAllString(expr, -1) {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if s, ok := strings.CutSuffix(m, suffix); ok && !strings.HasSuffix(m, "_total") {
				m = s
				break
			}
		}
		out = append(out, m)
	}
	return out
}

// TestDashboard checks the dashboard's JSON, that it has the panels the
// issue lists, and that every metric it and the alerts query exists in
// the code.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	known := knownMetrics(t)
	titles := ""
	for _, p := range d.Panels {
		titles += strings.ToLower(p.Title) + "\n"
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range referenced(tg.Expr) {
				if !known[m] {
					t.Errorf("panel %q queries %s, which no code defines", p.Title, m)
				}
			}
		}
	}
	for _, want := range []string{"request rate", "5xx", "latency", "cluster", "healthy endpoints", "wasm filter failures",
		"wasm compile time", "config version", "certificate expiry", "telemetry"} {
		if !strings.Contains(titles, want) {
			t.Errorf("no panel about %q", want)
		}
	}
	rules, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range referenced(string(rules)) {
		if !known[m] {
			t.Errorf("alerts.yml uses %s, which no code defines", m)
		}
	}
}

// TestPrometheusScrapes runs a real Prometheus (Debian package
// prometheus) that loads the alert rules and scrapes a metrics endpoint
// serving the proxy's metrics and the telemetry pipeline's, and waits
// until it has the target up, the telemetry series, and the rules loaded.
func TestPrometheusScrapes(t *testing.T) {
	bin := lookTool(t, "prometheus")
	m := metrics.New()
	p, err := telemetry.New(&config.Telemetry{
		Sinks:  []config.TelemetrySink{{Name: "siem", Type: "stdout"}},
		Access: []string{"siem"},
	}, telemetry.WithStdout(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	red := telemetry.NewRED(0)
	m.Registry.MustRegister(p.Collector())
	m.Registry.MustRegister(red.Collectors()...)
	red.Stats("cart", "payments", "spiffe://mesh/ns/a/sa/web").Observe(200, time.Millisecond)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	dir := t.TempDir()
	rulesPath, _ := filepath.Abs("alerts.yml")
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: wasmgate
    static_configs:
      - targets: [%q]
`, rulesPath, l.Addr().String())
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	web := testaddr.Free(t)
	cmd := exec.Command(bin, "--config.file="+confPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", logs.String())
		}
	})
	api := "http://" + web + "/api/v1/"
	waitUntil(t, "the target is up", func() bool {
		return queryValue(api, `up{job="wasmgate"}`) == "1"
	})
	waitUntil(t, "the telemetry and RED series are scraped", func() bool {
		return queryValue(api, `wasmgate_telemetry_dropped_total{sink="siem",kind="access",reason="queue_full"}`) == "0" &&
			queryValue(api, `sum(wasmgate_red_requests_total{route="cart",code_class="2xx"})`) == "1"
	})
	waitUntil(t, "the alert rules are loaded", func() bool {
		resp, err := http.Get(api + "rules")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, a := range []string{"WasmgateHigh5xxRatio", "WasmgateEndpointEjected", "WasmgateConfigRejected",
			"WasmgateCertificateExpiring", "WasmgateTelemetrySinkDropping"} {
			if !bytes.Contains(b, []byte(a)) {
				return false
			}
		}
		return bytes.Contains(b, []byte(`"health":"ok"`))
	})
}

// queryValue runs an instant query and returns the first sample's value,
// or "" when there is none.
func queryValue(api, q string) string {
	resp, err := http.Get(api + "query?query=" + url.QueryEscape(q))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Data.Result) == 0 {
		return ""
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return s
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
