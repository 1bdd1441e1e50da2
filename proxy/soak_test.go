package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
	"github.com/wasmgate/wasmgate/proxy/wasm"
)

// soakConfig is the soak's configuration. Each apply changes the
// listener's idle and write timeouts, where /load goes, a route that
// exists only in one generation, and the plugin's configuration (which
// starts a new instance of it).
const soakConfig = `
admin: {address: "off"}
listeners:
  - name: main
    address: "{{addr}}"
    idle_timeout: {{idle}}
    write_timeout: {{write}}
    header_read_timeout: 5s
    body_read_timeout: 4s
plugins:
  - name: tag
    file: "{{wasm}}"
    config: "gen-{{gen}}"
    call_timeout: 1s
clusters:
  - {name: a, endpoints: [{address: "{{a}}"}]}
  - {name: b, endpoints: [{address: "{{b}}"}]}
virtual_hosts:
  - name: all
    domains: ["*"]
    filters: [{plugin: tag}]
    routes:
      - {name: static, match: {path: /static}, direct_response: {status: 200, body: "static\n"}}
      - {match: {prefix: /gen{{gen}}}, direct_response: {status: 200, body: "gen\n"}}
      - {match: {prefix: /load}, cluster: {{load}}}
      - {match: {prefix: /}, cluster: a}
`

const (
	// soakBodyTimeout is soakConfig's body_read_timeout.
	soakBodyTimeout = 4 * time.Second
	// soakBigBody is what /big answers: far more than the socket
	// buffers between the upstream and a client that does not read.
	soakBigBody = 8 << 20
	// soakProbe ends a malformed exchange that keeps its connection:
	// the echo upstream marks its answer.
	soakProbe = "GET /probe?header=X-Probe:1 HTTP/1.1\r\nHost: probe\r\n\r\n"
)

// TestSoak runs a real proxy with a Wasm plugin in front of real
// upstreams for WASMGATE_SOAK_DURATION (10m unless set) under mixed
// traffic: keep-alive clients sending well-formed requests, clients that
// ask for large responses and never read them, bodies sent a byte a
// second, the raw-request corpus sent over and over, and a configuration
// applied every few seconds that changes routes, listener settings and
// the plugin. Every well-formed request must succeed; every hostile
// client must be answered or cut off in bounded time; the heap at the end
// must be near the heap after warm-up, and the goroutines must come back
// to where they were once everything is shut down.
func TestSoak(t *testing.T) {
	if os.Getenv("WASMGATE_SOAK") != "1" {
		t.Skip("a soak: set WASMGATE_SOAK=1 (make soak)")
	}
	duration := 10 * time.Minute
	if s := os.Getenv("WASMGATE_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("WASMGATE_SOAK_DURATION=%q: want a positive duration", s)
		}
		duration = d
	}
	baseGoroutines := runtime.NumGoroutine()

	module, err := filepath.Abs("wasm/testdata/addheader.wasm")
	if err != nil {
		t.Fatal(err)
	}
	cases := loadCorpus(t, "testdata/h1corpus")
	var malformed []corpusCase
	for _, tc := range cases {
		if tc.trickle == 0 {
			malformed = append(malformed, tc)
		}
	}

	// What became of /big's answers: cut off by the proxy, or written
	// whole.
	var bigCut, bigDone atomic.Int64
	bigChunk := bytes.Repeat([]byte("x"), 64<<10)
	echoA := testupstream.Echo("a")
	upA := testupstream.Start(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			echoA.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(soakBigBody))
		for i := 0; i < soakBigBody/len(bigChunk); i++ {
			if _, err := w.Write(bigChunk); err != nil {
				bigCut.Add(1)
				return
			}
		}
		bigDone.Add(1)
	}))
	upB := testupstream.Start(t, "b", nil)

	host, err := wasm.NewHost(wasm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.NewServer(proxy.Options{Plugins: host})
	gen := 0
	v := vars{"addr": "127.0.0.1:0", "wasm": module, "a": upA.Addr(), "b": upB.Addr()}
	config := func() {
		v["gen"] = strconv.Itoa(gen)
		v["idle"] = []string{"30s", "31s"}[gen%2]
		v["write"] = []string{"2s", "3s"}[gen%3%2]
		v["load"] = []string{"a", "b"}[gen%2]
	}
	config()
	if err := srv.Apply(context.Background(), parse(t, soakConfig, v), ""); err != nil {
		t.Fatalf("apply: %v", err)
	}
	shut := false
	shutdown := func() {
		if shut {
			return
		}
		shut = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = host.Close()
		upA.Close()
		upB.Close()
	}
	t.Cleanup(shutdown)
	addr := srv.Addr("main").String()
	v["addr"] = addr

	var (
		stop               atomic.Bool
		wg                 sync.WaitGroup
		requests, failed   atomic.Int64
		stalled            atomic.Int64
		slow, slowCut      atomic.Int64
		malformedExchanges atomic.Int64
		failMu             sync.Mutex
		failures           []string
		closedBetween      atomic.Int64
		transports         []*http.Transport
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		failMu.Unlock()
	}
	run := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}

	// Well-formed keep-alive load. POSTs are never sent again by
	// net/http on its own, so a connection cut under one shows.
	const clients, maxPerClient = 6, 1 << 22
	for c := range clients {
		tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
		transports = append(transports, tr)
		client := &http.Client{Transport: tr, Timeout: 15 * time.Second}
		run(func() {
			for i := 0; i < maxPerClient && !stop.Load(); i++ {
				var resp *http.Response
				var err error
				if i%2 == 0 {
					resp, err = client.Get("http://" + addr + "/load/get")
				} else {
					resp, err = client.Post("http://"+addr+"/load/post", "text/plain", strings.NewReader("payload "+strconv.Itoa(c)))
				}
				requests.Add(1)
				if err != nil {
					failed.Add(1)
					fail("well-formed request %d of client %d: %v", i, c, err)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
					failed.Add(1)
					fail("well-formed request %d of client %d: reading the body: %v", i, c, err)
				case resp.StatusCode/100 != 2:
					failed.Add(1)
					fail("well-formed request %d of client %d: status %d: %.200q", i, c, resp.StatusCode, body)
				case !bytes.Contains(body, []byte(`"X-Wasm":["1"]`)):
					failed.Add(1)
					fail("well-formed request %d of client %d: the upstream did not see the plugin's header: %.300q", i, c, body)
				}
				if resp.Close {
					closedBetween.Add(1)
				}
			}
		})
	}

	// Clients that ask for a large response and never read it: the
	// write timeout (2s or 3s) must cut each off, and the proxy counts
	// each.
	const stallers, maxStalls = 3, 1 << 16
	for range stallers {
		run(func() {
			for i := 0; i < maxStalls && !stop.Load(); i++ {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					fail("a non-reading client: %v", err)
					return
				}
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetReadBuffer(4 << 10)
				}
				stalled.Add(1)
				if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: big\r\n\r\n"); err != nil {
					fail("a non-reading client: writing: %v", err)
					c.Close()
					continue
				}
				// Hold the connection unread well past the write timeout.
				// Whether the proxy cut it off shows in its counter, not
				// here: what it wrote before drains from the kernel's
				// buffers at the pace of a tiny receive window.
				time.Sleep(8 * time.Second)
				c.Close()
			}
		})
	}

	// Bodies sent a byte a second: body_read_timeout answers 408 and
	// closes.
	const slowClients, maxSlow = 2, 1 << 16
	for range slowClients {
		run(func() {
			for i := 0; i < maxSlow && !stop.Load(); i++ {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					fail("a slow body: %v", err)
					return
				}
				slow.Add(1)
				start := time.Now()
				done := make(chan struct{})
				go func() {
					if _, err := io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: slow\r\nContent-Length: 1000\r\n\r\n"); err != nil {
						return
					}
					tick := time.NewTicker(time.Second)
					defer tick.Stop()
					for range 1000 {
						select {
						case <-done:
							return
						case <-tick.C:
						}
						if _, err := c.Write([]byte{'x'}); err != nil {
							return
						}
					}
				}()
				_ = c.SetReadDeadline(time.Now().Add(soakBodyTimeout + 10*time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "POST"})
				switch {
				case err == nil:
					resp.Body.Close()
					if resp.StatusCode != http.StatusRequestTimeout {
						fail("a slow body got %d, want 408", resp.StatusCode)
					} else {
						slowCut.Add(1)
					}
				case isTimeout(err):
					fail("a slow body was neither answered nor cut off after %v", time.Since(start).Round(time.Second))
				default:
					slowCut.Add(1) // closed without an answer
				}
				close(done)
				c.Close()
			}
		})
	}

	// The raw corpus, over and over, on one connection per case.
	run(func() {
		for i := 0; i < 1<<22 && !stop.Load(); i++ {
			tc := malformed[i%len(malformed)]
			statuses, err := soakExchange(addr, tc)
			malformedExchanges.Add(1)
			if err != nil {
				fail("corpus case %s: after statuses %v: %v", tc.name, statuses, err)
				continue
			}
			for _, s := range statuses {
				if s == http.StatusBadGateway || s == http.StatusServiceUnavailable || s == http.StatusGatewayTimeout {
					fail("corpus case %s: statuses %v: a client's request blamed on the upstream", tc.name, statuses)
					break
				}
			}
		}
	})

	heapInuse := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	warmUp := min(max(duration/6, 10*time.Second), time.Minute)
	start := time.Now()
	var heapWarm, heapEnd, heapMax uint64
	applies := 0
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	for ; time.Since(start) < duration; <-tick.C {
		if heapWarm == 0 && time.Since(start) >= warmUp {
			heapWarm = heapInuse()
			t.Logf("heap after %v of warm-up: %d MB", warmUp, heapWarm>>20)
		}
		if heapWarm != 0 && applies%10 == 0 {
			heapMax = max(heapMax, heapInuse())
		}
		gen++
		config()
		if err := srv.Apply(context.Background(), parse(t, soakConfig, v), ""); err != nil {
			fail("apply %d: %v", gen, err)
			continue
		}
		applies++
		if r, err := http.Get("http://" + addr + "/gen" + strconv.Itoa(gen)); err != nil {
			fail("the route of generation %d: %v", gen, err)
		} else {
			r.Body.Close()
			if r.StatusCode != http.StatusOK {
				fail("the route of generation %d: status %d", gen, r.StatusCode)
			}
		}
	}
	heapEnd = heapInuse()
	heapMax = max(heapMax, heapEnd)
	stop.Store(true)
	wg.Wait()
	for _, tr := range transports {
		tr.CloseIdleConnections()
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	heapIdle := heapInuse()
	writeTimeouts := int64(gatheredSum(t, &env{srv: srv}, "wasmgate_downstream_write_timeouts_total"))
	shutdown()
	var goroutines int
	deadline := time.Now().Add(15 * time.Second)
	for {
		goroutines = runtime.NumGoroutine()
		if goroutines <= baseGoroutines+soakGoroutineSlack || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	t.Logf("%v: %d well-formed requests (%d failed, %d closed between requests), %d applies",
		time.Since(start).Round(time.Second), requests.Load(), failed.Load(), closedBetween.Load(), applies)
	t.Logf("hostile: %d corpus exchanges (%d cases, one connection each), %d non-reading clients (%d write timeouts counted; the upstream cut off %d times, finished %d), %d slow bodies (%d cut off)",
		malformedExchanges.Load(), len(malformed), stalled.Load(), writeTimeouts, bigCut.Load(), bigDone.Load(), slow.Load(), slowCut.Load())
	t.Logf("heap in use: %d MB after warm-up, %d MB at the end under load, %d MB at most, %d MB idle; goroutines %d before, %d after shutdown",
		heapWarm>>20, heapEnd>>20, heapMax>>20, heapIdle>>20, baseGoroutines, goroutines)

	for _, f := range failures {
		t.Error(f)
	}
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d well-formed requests failed", f, requests.Load())
	}
	if requests.Load() == 0 || malformedExchanges.Load() == 0 || stalled.Load() == 0 || slow.Load() == 0 {
		t.Errorf("some traffic never ran")
	}
	if writeTimeouts < stalled.Load() {
		t.Errorf("%d clients never read their response for 8s, and the write timeout cut off %d", stalled.Load(), writeTimeouts)
	}
	if heapWarm == 0 {
		t.Errorf("the soak ended before its warm-up (%v)", warmUp)
	} else if limit := heapWarm*3/2 + 16<<20; heapEnd > limit {
		t.Errorf("heap in use grew from %d MB after warm-up to %d MB at the end (limit %d MB)", heapWarm>>20, heapEnd>>20, limit>>20)
	}
	if goroutines > baseGoroutines+soakGoroutineSlack {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines after shutdown, %d before the soak:\n%s", goroutines, baseGoroutines, buf)
	}
}

// soakGoroutineSlack is how many goroutines more than before the soak may
// remain after it: the runtime's and the libraries' own, started once.
const soakGoroutineSlack = 10

// soakExchange writes a corpus case on a connection of its own, and the
// probe after it when the case keeps the connection, and reads responses
// until the proxy closes the connection or the probe is answered. An
// exchange that comes to neither is an error.
func soakExchange(addr string, tc corpusCase) (statuses []int, err error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(soakBodyTimeout + 10*time.Second))
	raw := tc.raw
	if !tc.close {
		raw = append(raw[:len(raw):len(raw)], soakProbe...)
	}
	go func() { _, _ = c.Write(raw) }()
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				return statuses, nil
			}
			return statuses, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
		if err != nil {
			return statuses, nil // cut off in the body: closed
		}
		if resp.Header.Get("X-Probe") != "" {
			return statuses, nil
		}
	}
}
