package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
)

// upstream is a real HTTP server that says which instance answered and
// counts the connections it accepts.
type upstream struct {
	name     string
	ln       net.Listener
	accepted atomic.Int64
	requests atomic.Int64
}

// startUpstream serves on a random loopback port until the test ends.
// /delay?d=DURATION answers after a while.
func startUpstream(t testing.TB, name string) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{name: name, ln: ln}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u.requests.Add(1)
			if d, err := time.ParseDuration(r.URL.Query().Get("d")); err == nil {
				select {
				case <-time.After(d):
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, `{"instance":%q,"path":%q}`, name, r.URL.Path)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				u.accepted.Add(1)
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u
}

func (u *upstream) Addr() string    { return u.ln.Addr().String() }
func (u *upstream) Accepted() int64 { return u.accepted.Load() }
func (u *upstream) Requests() int64 { return u.requests.Load() }

// genConfig is the i-th configuration of a file rewritten again and again:
// / goes to a or b by turns, and /gen/i is new in each.
func genConfig(i int, a, b string) string {
	target := "a"
	if i%2 == 1 {
		target = "b"
	}
	return fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters:
  - {name: a, endpoints: [{address: "%[2]s"}]}
  - {name: b, endpoints: [{address: "%[3]s"}]}
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {match: {path: /gen/%[1]d}, direct_response: {status: 200, body: "gen-%[1]d"}}
      - {match: {prefix: /}, cluster: %[4]s}
`, i, a, b, target)
}

// writeAtomic replaces path by renaming a new file over it.
func writeAtomic(t testing.TB, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startRunner starts the proxy on file as `wasmgate run -c file` does.
// watch says whether to follow the file.
func startRunner(t *testing.T, file string, watch bool) *runner {
	t.Helper()
	cfg, err := config.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r, err := startProxy(ctx, cfg, zap.NewNop(), runOptions{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.wait(ctx) }()
	if watch {
		go r.watchFile(ctx, file)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("wait: %v", err)
		}
	})
	return r
}

func (r *runner) url(path string) string { return "http://" + r.srv.Addr("main").String() + path }

func getBody(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metric reads one sample from the admin endpoints, or -1.
func (r *runner) metric(t testing.TB, name string) float64 {
	t.Helper()
	_, body, err := getBody(http.DefaultClient, "http://"+r.adminA.String()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHotReloadUnderLoad rewrites the configuration file ten times a
// second for three seconds, by rename and in place, while clients send
// requests without pause: no request fails, and the last file is served.
func TestHotReloadUnderLoad(t *testing.T) {
	a := startUpstream(t, "a")
	b := startUpstream(t, "b")
	file := filepath.Join(t.TempDir(), "wasmgate.yaml")
	writeAtomic(t, file, genConfig(0, a.Addr(), b.Addr()))
	r := startRunner(t, file, true)
	url := r.url("/load")

	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	seen := [2]atomic.Int64{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
			defer c.CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				status, body, err := getBody(c, url)
				sent.Add(1)
				switch {
				case err != nil:
					err = fmt.Errorf("request %d: %w", sent.Load(), err)
				case status != http.StatusOK:
					err = fmt.Errorf("status %d: %q", status, body)
				case strings.Contains(body, `"instance":"a"`):
					seen[0].Add(1)
				case strings.Contains(body, `"instance":"b"`):
					seen[1].Add(1)
				default:
					err = fmt.Errorf("an answer from no known upstream: %q", body)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}

	const writes = 30
	before := r.metric(t, `wasmgate_config_reloads_total{result="success"}`)
	tick := time.NewTicker(100 * time.Millisecond)
	for i := 1; i <= writes; i++ {
		<-tick.C
		doc := genConfig(i, a.Addr(), b.Addr())
		if i%2 == 0 {
			writeAtomic(t, file, doc)
		} else if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	// The last write's route answers.
	eventually(t, 5*time.Second, "the route of the last write answers", func() bool {
		status, body, err := getBody(http.DefaultClient, r.url(fmt.Sprintf("/gen/%d", writes)))
		return err == nil && status == 200 && body == fmt.Sprintf("gen-%d", writes)
	})
	close(stop)
	wg.Wait()

	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d requests failed during reloads; the first: %v", f, sent.Load(), firstErr.Load())
	}
	if sent.Load() < 100 {
		t.Errorf("only %d requests were sent", sent.Load())
	}
	if seen[0].Load() == 0 || seen[1].Load() == 0 {
		t.Errorf("answers from a: %d, from b: %d; both configurations should have served", seen[0].Load(), seen[1].Load())
	}
	reloads := r.metric(t, `wasmgate_config_reloads_total{result="success"}`) - before
	if reloads < writes/3 {
		t.Errorf("%v successful reloads for %d writes", reloads, writes)
	}
	// Unchanged clusters keep their pools: the upstreams see about one
	// connection per client, not one per reload.
	if n := a.Accepted() + b.Accepted(); n > 2*8+4 {
		t.Errorf("the upstreams accepted %d connections over %v reloads from 8 clients", n, reloads)
	}
	t.Logf("%d requests, %v reloads, %d upstream connections", sent.Load(), reloads, a.Accepted()+b.Accepted())
}

// TestInvalidFileKeepsServing writes a file with an error: it is rejected,
// the old configuration keeps serving, and the failure is counted.
func TestInvalidFileKeepsServing(t *testing.T) {
	a := startUpstream(t, "a")
	b := startUpstream(t, "b")
	file := filepath.Join(t.TempDir(), "wasmgate.yaml")
	writeAtomic(t, file, genConfig(0, a.Addr(), b.Addr()))
	r := startRunner(t, file, true)
	failures := `wasmgate_config_reloads_total{result="failure"}`
	if v := r.metric(t, failures); v > 0 {
		t.Fatalf("failures before any reload: %v", v)
	}

	bad := strings.Replace(genConfig(1, a.Addr(), b.Addr()), "cluster: b", "cluster: nowhere", 1)
	// The watcher starts beside the runner; write until it has seen one.
	last := time.Time{}
	eventually(t, 5*time.Second, "the failed reload is counted", func() bool {
		if time.Since(last) > 200*time.Millisecond {
			writeAtomic(t, file, bad)
			last = time.Now()
		}
		return r.metric(t, failures) >= 1
	})
	if v := r.metric(t, "wasmgate_config_last_reload_success"); v != 0 {
		t.Errorf("last reload success %v after a rejected file", v)
	}
	status, body, err := getBody(http.DefaultClient, r.url("/x"))
	if err != nil || status != 200 || !strings.Contains(body, `"instance":"a"`) {
		t.Errorf("after a rejected file: %d %q %v, want the old configuration's a", status, body, err)
	}
	if v := r.srv.Snapshot().Version; v != "1" {
		t.Errorf("version %s after a rejected file", v)
	}

	// A good file after it is taken.
	writeAtomic(t, file, genConfig(1, a.Addr(), b.Addr()))
	eventually(t, 5*time.Second, "the good file is served", func() bool {
		status, body, err := getBody(http.DefaultClient, r.url("/x"))
		return err == nil && status == 200 && strings.Contains(body, `"instance":"b"`)
	})
	if v := r.metric(t, "wasmgate_config_last_reload_success"); v != 1 {
		t.Errorf("last reload success %v after a good file", v)
	}
}

// TestReloadCountsEachFailureOnce reloads directly, once per kind of bad
// file: one that does not parse and one that the proxy cannot apply.
func TestReloadCountsEachFailureOnce(t *testing.T) {
	a := startUpstream(t, "a")
	b := startUpstream(t, "b")
	file := filepath.Join(t.TempDir(), "wasmgate.yaml")
	writeAtomic(t, file, genConfig(0, a.Addr(), b.Addr()))
	r := startRunner(t, file, false)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	failures := `wasmgate_config_reloads_total{result="failure"}`
	cases := []struct{ name, doc string }{
		{"invalid", "listeners: [{name: main}]\n"},
		{"unappliable", strings.Replace(genConfig(1, a.Addr(), b.Addr()), `listeners: [{name: main, address: "127.0.0.1:0"}]`,
			`listeners: [{name: main, address: "127.0.0.1:0"}, {name: clash, address: "`+taken.Addr().String()+`"}]`, 1)},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			writeAtomic(t, file, tc.doc)
			r.reload(context.Background(), file)
			if v := r.metric(t, failures); v != float64(i+1) {
				t.Errorf("%s counted %v failures in all, want %d", tc.name, v, i+1)
			}
			if r.srv.Snapshot().Version != "1" {
				t.Errorf("version %s", r.srv.Snapshot().Version)
			}
		})
	}
}

// TestSIGHUPReloads changes the file while nothing watches it, then sends
// SIGHUP to the process.
func TestSIGHUPReloads(t *testing.T) {
	// While this test runs, SIGHUP must not end the test binary.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	a := startUpstream(t, "a")
	b := startUpstream(t, "b")
	file := filepath.Join(t.TempDir(), "wasmgate.yaml")
	writeAtomic(t, file, genConfig(0, a.Addr(), b.Addr()))
	cfg, err := config.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := startProxy(ctx, cfg, zap.NewNop(), runOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.wait(ctx) }()
	defer func() { cancel(); <-done }()

	// Changed before anything watches it: only SIGHUP can pick it up.
	writeAtomic(t, file, genConfig(7, a.Addr(), b.Addr()))
	go r.watchFile(ctx, file)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		ok := false
		for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if status, body, err := getBody(http.DefaultClient, r.url("/gen/7")); err == nil && status == 200 && body == "gen-7" {
				ok = true
				break
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the file")
		}
	}
}
