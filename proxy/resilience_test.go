package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
)

// resilienceConfig is one listener, one cluster "backend" whose endpoints
// and resilience settings come from {{endpoints}} and {{cluster}}, and one
// route whose extra settings come from {{route}}.
const resilienceConfig = `
admin: {address: "off"}
access_log: {path: "{{log}}", fields: [path, status, response_flags, upstream_host, details]}
listeners:
  - name: main
    address: 127.0.0.1:0
{{listener}}
clusters:
  - name: backend
    endpoints:
{{endpoints}}
{{cluster}}
virtual_hosts:
  - name: web
    domains: ["*"]
    routes:
      - name: all
        cluster: backend
{{route}}
`

func endpoints(addrs ...string) string {
	var b strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&b, "      - address: %s\n", a)
	}
	return b.String()
}

func resVars(t *testing.T, eps string, kv ...string) vars {
	v := vars{"log": filepath.Join(t.TempDir(), "access.log"), "endpoints": eps, "cluster": "", "route": "", "listener": ""}
	for i := 0; i+1 < len(kv); i += 2 {
		v[kv[i]] = kv[i+1]
	}
	return v
}

// hits sends n GETs and counts the answers by X-Instance (or by status
// for answers without one).
func hits(t *testing.T, e *env, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		r := e.get(t, "", "/")
		if inst := r.header.Get("X-Instance"); inst != "" {
			out[inst]++
		} else {
			out[fmt.Sprint(r.status)]++
		}
	}
	return out
}

func endpointStatus(t *testing.T, e *env, addr string) map[string]any {
	t.Helper()
	for _, ep := range e.clusters(t)["backend"].Endpoints {
		if ep.Address == addr {
			return map[string]any{"healthy": ep.Healthy, "ejected": ep.Ejected, "times": ep.TimesEjected, "hc": ep.HealthCheck}
		}
	}
	t.Fatalf("no endpoint %s in /clusters", addr)
	return nil
}

func TestOutlierEjectsAndRestores(t *testing.T) {
	good := testupstream.Start(t, "good", nil)
	sw := testupstream.NewSwitch("flaky")
	flaky := testupstream.Start(t, "flaky", sw)
	sw.Fail()
	e := newEnv(t, resilienceConfig, resVars(t, endpoints(good.Addr(), flaky.Addr()), "cluster", `
    outlier_detection: {consecutive_5xx: 3, base_ejection_time: 400ms, max_ejection_percent: 50}`))

	// Round robin sends every other request to the failing endpoint until
	// its third 503 in a row ejects it.
	got := hits(t, e, 30)
	if got["503"] != 3 || got["good"] != 27 {
		t.Fatalf("answers %v: want 3 × 503 before the ejection, then only good", got)
	}
	if st := endpointStatus(t, e, flaky.Addr()); st["ejected"] != true || st["healthy"] != false || st["times"] != 1 {
		t.Errorf("/clusters shows %v for the ejected endpoint", st)
	}
	if n := counterValue(e.srv.Metrics().Cluster("backend").EjectionsCounter(0)); n != 1 {
		t.Errorf("ejections metric %v, want 1", n)
	}

	// The ejection ends by itself; the endpoint, now recovered, takes
	// traffic again.
	sw.Recover()
	eventually(t, 2*time.Second, "the ejected endpoint to come back", func() bool {
		return endpointStatus(t, e, flaky.Addr())["ejected"] == false
	})
	if got := hits(t, e, 10); got["flaky"] != 5 || got["good"] != 5 {
		t.Errorf("after the ejection: %v, want 5 and 5", got)
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	a := testupstream.Start(t, "a", testupstream.Status(503))
	b := testupstream.Start(t, "b", testupstream.Status(503))
	e := newEnv(t, resilienceConfig, resVars(t, endpoints(a.Addr(), b.Addr()), "cluster", `
    outlier_detection: {consecutive_gateway_failure: 2, consecutive_5xx: -1, base_ejection_time: 10s, max_ejection_percent: 50}`))
	hits(t, e, 10)
	ejected := 0
	for _, ep := range e.clusters(t)["backend"].Endpoints {
		if ep.Ejected {
			ejected++
		}
	}
	if ejected != 1 {
		t.Errorf("%d endpoints ejected, want 1 (max_ejection_percent 50 of 2)", ejected)
	}
}

const healthCheck = `
    health_check: {path: /healthz, interval: 50ms, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2, initial: healthy}`

func TestHealthCheckDownAndUp(t *testing.T) {
	good := testupstream.Start(t, "good", nil)
	sw := testupstream.NewSwitch("sick")
	sick := testupstream.Start(t, "sick", sw)
	e := newEnv(t, resilienceConfig, resVars(t, endpoints(good.Addr(), sick.Addr()), "cluster", healthCheck))

	sw.Fail()
	eventually(t, 2*time.Second, "health checks to mark the endpoint down", func() bool {
		return endpointStatus(t, e, sick.Addr())["hc"] == "unhealthy"
	})
	if got := hits(t, e, 10); got["good"] != 10 {
		t.Errorf("while unhealthy: %v, want all to good", got)
	}
	sw.Recover()
	eventually(t, 2*time.Second, "health checks to mark the endpoint up", func() bool {
		return endpointStatus(t, e, sick.Addr())["hc"] == "healthy"
	})
	if got := hits(t, e, 10); got["sick"] != 5 {
		t.Errorf("after recovery: %v, want 5 to the recovered endpoint", got)
	}
	m := e.srv.Metrics().Cluster("backend")
	if down, up := counterValue(m.HealthCounter(false)), counterValue(m.HealthCounter(true)); down != 1 || up != 1 {
		t.Errorf("health transitions: %v down, %v up; want 1 and 1", down, up)
	}
}

func TestHealthSurvivesReload(t *testing.T) {
	good := testupstream.Start(t, "good", nil)
	sick := testupstream.Start(t, "sick", testupstream.Status(500))
	other := testupstream.Start(t, "other", nil)
	// Probes are rare and need three failures: after the reload, the first
	// probe alone could not mark the endpoint down again.
	hc := `
    health_check: {path: /healthz, interval: 1s, unhealthy_threshold: 3, initial: healthy}`
	v := resVars(t, endpoints(good.Addr(), sick.Addr()), "cluster", hc)
	e := newEnv(t, resilienceConfig, v)
	eventually(t, 5*time.Second, "health checks to mark the endpoint down", func() bool {
		return endpointStatus(t, e, sick.Addr())["hc"] == "unhealthy"
	})
	before := sick.Requests()

	// A changed cluster (one more endpoint) is rebuilt; the endpoint that
	// stays keeps its health.
	v["endpoints"] = endpoints(good.Addr(), sick.Addr(), other.Addr())
	e.apply(t, resilienceConfig, v)
	if st := endpointStatus(t, e, sick.Addr()); st["hc"] != "unhealthy" {
		t.Fatalf("after the reload the endpoint is %v, want still unhealthy", st)
	}
	got := hits(t, e, 20)
	if got["500"] != 0 || got["good"] != 10 || got["other"] != 10 {
		t.Errorf("after the reload: %v, want nothing to the unhealthy endpoint", got)
	}
	// Only health checks reached it: at most a probe or two since.
	if n := sick.Requests() - before; n > 3 {
		t.Errorf("%d requests reached the unhealthy endpoint after the reload", n)
	}
}

func TestPanicThreshold(t *testing.T) {
	good := testupstream.Start(t, "good", nil)
	bad1 := testupstream.Start(t, "bad1", testupstream.Status(500))
	bad2 := testupstream.Start(t, "bad2", testupstream.Status(500))
	hc := `
    health_check: {path: /healthz, interval: 50ms, unhealthy_threshold: 1}`
	for _, tc := range []struct {
		name, threshold string
		panic           bool
	}{
		{"default 50", "", true},
		{"off", "\n    panic_threshold: 0", false},
		{"30", "\n    panic_threshold: 30", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, resilienceConfig, resVars(t, endpoints(good.Addr(), bad1.Addr(), bad2.Addr()), "cluster", hc+tc.threshold))
			eventually(t, 2*time.Second, "health checks to probe every endpoint", func() bool {
				c := e.clusters(t)["backend"]
				return c.Endpoints[0].Healthy && !c.Endpoints[1].Healthy && !c.Endpoints[2].Healthy
			})
			got := hits(t, e, 30)
			if panicked := e.clusters(t)["backend"].Panic; panicked != tc.panic {
				t.Errorf("panic %v, want %v", panicked, tc.panic)
			}
			if tc.panic && (got["500"] != 20 || got["good"] != 10) {
				t.Errorf("in panic: %v, want traffic to all three", got)
			}
			if !tc.panic && got["good"] != 30 {
				t.Errorf("without panic: %v, want all to the healthy endpoint", got)
			}
		})
	}
}

func TestRetryLandsOnHealthyEndpoint(t *testing.T) {
	good := testupstream.Start(t, "good", nil)
	bad := testupstream.Start(t, "bad", testupstream.Status(503))
	e := newEnv(t, resilienceConfig, resVars(t, endpoints(good.Addr(), bad.Addr()), "route", `
        retry_policy: {retry_on: [5xx], num_retries: 2, back_off: {base_interval: 1ms}}`))
	if got := hits(t, e, 20); got["good"] != 20 {
		t.Errorf("answers %v, want every request answered by the healthy endpoint", got)
	}
	if bad.Requests() == 0 {
		t.Error("the failing endpoint was never tried")
	}
	m := e.srv.Metrics().Cluster("backend")
	if ok := counterValue(m.RetryCounter(0)); ok != float64(bad.Requests()) {
		t.Errorf("%v successful retries, want one per failed attempt (%d)", ok, bad.Requests())
	}
}

func TestRetryReplaysSmallBodyAndRunsOut(t *testing.T) {
	reset := testupstream.StartRaw(t, "reset", testupstream.Reset)
	echo := testupstream.Start(t, "echo", nil)
	v := resVars(t, endpoints(reset.Addr(), echo.Addr()), "route", `
        retry_policy: {retry_on: [reset, 5xx], num_retries: 1, back_off: {base_interval: 1ms}}`)
	e := newEnv(t, resilienceConfig, v)

	// A PUT of known length is read whole first, so the retry after a reset
	// sends the same body to the other endpoint.
	for i := 0; i < 4; i++ {
		r := e.do(t, request{method: "PUT", path: "/put", body: strings.NewReader("the same body")})
		if got := r.echo(t); got.Body != "the same body" || got.Instance != "echo" {
			t.Fatalf("echo %+v", got)
		}
	}
	// With every endpoint resetting, the retries run out: URX.
	v["endpoints"] = endpoints(reset.Addr())
	e.apply(t, resilienceConfig, v)
	if r := e.get(t, "", "/exhausted"); r.status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", r.status)
	}
	lines := readLogLines(t, v["log"], 5)
	if last := lines[len(lines)-1]; last["path"] != "/exhausted" || !strings.Contains(fmt.Sprint(last["response_flags"]), "URX") {
		t.Errorf("access log %v, want URX", last)
	}
}

func TestRetryNotAfterStreamedBody(t *testing.T) {
	reset := testupstream.StartRaw(t, "reset", testupstream.Reset)
	echo := testupstream.Start(t, "echo", nil)
	v := resVars(t, endpoints(reset.Addr()), "route", `
        retry_policy: {retry_on: [reset], num_retries: 3, back_off: {base_interval: 1ms}}`)
	e := newEnv(t, resilienceConfig, v)
	_ = echo
	// A chunked body (no length) streams upstream; once it went, it
	// cannot be sent again.
	body := io.MultiReader(strings.NewReader("chunk one "), strings.NewReader("chunk two"))
	r := e.do(t, request{method: "PUT", path: "/stream", body: struct{ io.Reader }{body}})
	if r.status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", r.status)
	}
	if n := reset.Requests(); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
	lines := readLogLines(t, v["log"], 1)
	if f := fmt.Sprint(lines[0]["response_flags"]); !strings.Contains(f, "NRB") {
		t.Errorf("flags %s, want NRB", f)
	}
}

func TestRetryBudgetStopsStorm(t *testing.T) {
	var eps []string
	var ups []*testupstream.Server
	for i := 0; i < 3; i++ {
		u := testupstream.Start(t, fmt.Sprint("slow", i), testupstream.SlowStatus(503, 50*time.Millisecond))
		ups = append(ups, u)
		eps = append(eps, u.Addr())
	}
	run := func(t *testing.T, cluster string) int64 {
		e := newEnv(t, resilienceConfig, resVars(t, endpoints(eps...), "cluster", cluster, "route", `
        retry_policy: {retry_on: [5xx], num_retries: 3, back_off: {base_interval: 1ms}}`))
		var before int64
		for _, u := range ups {
			before += u.Requests()
		}
		const clients = 20
		var wg sync.WaitGroup
		var bad atomic.Int64
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r := e.get(t, "", "/"); r.status != 503 {
					bad.Add(1)
				}
			}()
		}
		wg.Wait()
		if bad.Load() != 0 {
			t.Errorf("%d answers other than 503", bad.Load())
		}
		var after int64
		for _, u := range ups {
			after += u.Requests()
		}
		return after - before
	}
	var storm, budgeted int64
	t.Run("unbounded", func(t *testing.T) {
		storm = run(t, `
    circuit_breakers: {max_retries: 1000}`)
	})
	t.Run("budget", func(t *testing.T) {
		budgeted = run(t, `
    circuit_breakers: {retry_budget: {budget_percent: 10, min_retry_concurrency: 1}}`)
	})
	t.Logf("upstream hits for 20 requests: %d without a budget, %d with 10%%", storm, budgeted)
	if storm != 80 {
		t.Errorf("without a budget %d hits, want 80 (4 attempts each)", storm)
	}
	if budgeted > 40 {
		t.Errorf("with a budget %d hits, want at most 40", budgeted)
	}
}

func TestCircuitBreakers(t *testing.T) {
	t.Run("max_connections", func(t *testing.T) {
		silent := testupstream.StartRaw(t, "silent", testupstream.Silent)
		e := newEnv(t, resilienceConfig, resVars(t, endpoints(silent.Addr()), "cluster", `
    circuit_breakers: {max_connections: 2}`, "route", `
        timeout: 1s`))
		statuses := concurrently(t, e, 5)
		if statuses[503] != 3 || statuses[504] != 2 {
			t.Errorf("statuses %v, want 3 × 503 (overflow) and 2 × 504 (the hanging ones)", statuses)
		}
		if n := silent.Accepted(); n != 2 {
			t.Errorf("the upstream accepted %d connections, want 2", n)
		}
	})
	t.Run("max_requests", func(t *testing.T) {
		hang := testupstream.Start(t, "hang", testupstream.Hang())
		e := newEnv(t, resilienceConfig, resVars(t, endpoints(hang.Addr()), "cluster", `
    circuit_breakers: {max_requests: 2}`, "route", `
        timeout: 1s`))
		statuses := concurrently(t, e, 5)
		if statuses[503] != 3 || hang.Requests() != 2 {
			t.Errorf("statuses %v and %d upstream requests, want 3 × 503 and 2 requests", statuses, hang.Requests())
		}
		if n := counterValue(e.srv.Metrics().Cluster("backend").OverflowCounter(2)); n != 3 {
			t.Errorf("max_requests overflows %v, want 3", n)
		}
	})
	t.Run("max_pending_requests", func(t *testing.T) {
		hang := testupstream.Start(t, "hang", testupstream.Hang())
		e := newEnv(t, resilienceConfig, resVars(t, endpoints(hang.Addr()), "cluster", `
    max_connections_per_endpoint: 1
    connect_timeout: 1s
    circuit_breakers: {max_pending_requests: 1}`, "route", `
        timeout: 2s`))
		statuses := concurrently(t, e, 4)
		// One request holds the only connection, one waits for it and
		// times out, two overflow at once.
		if statuses[503] < 2 || hang.Requests() != 1 || hang.Accepted() != 1 {
			t.Errorf("statuses %v, %d upstream requests on %d connections; want at least 2 × 503 and 1 request", statuses, hang.Requests(), hang.Accepted())
		}
	})
}

// concurrently sends n GETs at once and counts the statuses.
func concurrently(t *testing.T, e *env, n int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	out := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.get(t, "", "/")
			mu.Lock()
			out[r.status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func TestSlowlorisCutOff(t *testing.T) {
	up := testupstream.Start(t, "up", nil)
	e := newEnv(t, resilienceConfig, resVars(t, endpoints(up.Addr()), "listener", `
    header_read_timeout: 300ms`))
	c, err := net.Dial("tcp", e.addr(t, "main"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		// Trickle a header byte every 50ms, forever.
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			closed <- time.Since(start)
			return
		}
		buf := make([]byte, 1)
		for {
			_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
					closed <- time.Since(start)
					return
				}
			}
			if _, err := io.WriteString(c, "a"); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	// Meanwhile other clients are served.
	for i := 0; i < 5; i++ {
		if r := e.get(t, "", "/"); r.status != 200 {
			t.Fatalf("a normal client got %d", r.status)
		}
	}
	select {
	case d := <-closed:
		if d < 250*time.Millisecond || d > 3*time.Second {
			t.Errorf("the slow client was cut off after %v, want about 300ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the slow client was never cut off")
	}
}

func TestMaxConnectionAge(t *testing.T) {
	up := testupstream.Start(t, "up", nil)
	e := newEnv(t, resilienceConfig, resVars(t, endpoints(up.Addr()), "listener", `
    max_connection_age: 200ms`))
	c, err := net.Dial("tcp", e.addr(t, "main"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	roundTrip := func() *http.Response {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if r := roundTrip(); r.Close {
		t.Fatal("a young connection was closed")
	}
	time.Sleep(250 * time.Millisecond)
	if r := roundTrip(); !r.Close {
		t.Fatal("an old connection was kept open")
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the last response: %v, want EOF", err)
	}
}

func TestRateLimit(t *testing.T) {
	up := testupstream.Start(t, "up", nil)
	v := resVars(t, endpoints(up.Addr()), "route", `
        rate_limit: {max_tokens: 3, fill_interval: 10s, key: header, header: x-api-key}`)
	e := newEnv(t, resilienceConfig, v)
	var last response
	ok := 0
	for i := 0; i < 5; i++ {
		r := e.get(t, "", "/", "X-Api-Key", "alice")
		if r.status == 200 {
			ok++
		}
		last = r
	}
	if ok != 3 || last.status != http.StatusTooManyRequests {
		t.Fatalf("%d let through, last %d; want 3 and 429", ok, last.status)
	}
	h := last.header
	if h.Get("Retry-After") != "4" || h.Get("X-Ratelimit-Limit") != "3" || h.Get("X-Ratelimit-Remaining") != "0" || h.Get("X-Ratelimit-Reset") != "10" {
		t.Errorf("headers %v", h)
	}
	// Another key has its own bucket.
	if r := e.get(t, "", "/", "X-Api-Key", "bob"); r.status != 200 {
		t.Errorf("another key got %d", r.status)
	}
	lines := readLogLines(t, v["log"], 6)
	if f := fmt.Sprint(lines[4]["response_flags"]); f != "RL" {
		t.Errorf("flags %s, want RL", f)
	}
	if n := up.Requests(); n != 4 {
		t.Errorf("%d requests reached the upstream, want 4", n)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
