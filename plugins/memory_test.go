package plugins_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/wasm"
)

// Environment of a child process of TestMemory.
const (
	memCaseEnv    = "WASMGATE_MEMORY_CASE"
	memBackendEnv = "WASMGATE_MEMORY_BACKEND"
	memCacheEnv   = "WASMGATE_MEMORY_CACHE"
)

// pluginConfig configures each first-party plugin as a sidecar would:
// authz with an inline key and a rule, encryption with a policy and a
// key, telemetry sampling every request. %d varies with each reload.
var pluginConfig = map[string]string{
	"authz": `  config:
    jwt: {optional: true, jwks: {keys: [{kty: oct, kid: k1, k: c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0}]}}
    principal_header: x-principal
    rules:
    - {action: allow, paths: ["/*"]}
    - {action: deny, paths: ["/admin%d"]}
    default: allow
`,
	"encryption": `  config:
    policies:
    - {name: public%d, path_prefix: /public, require: none}
    default: {require: none}
    keys: {k1: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
    active_key: k1
    encrypt_headers: [x-token]
    decrypt_headers: [x-token]
`,
	"telemetry": `  config:
    sample_rate: 1
    trace_id_header: x-trace-id%d
`,
}

// oneVM prefixes a case whose plugins run from firstparty.wasm in one VM
// (vm_id firstparty, each selected by its root_id) rather than each from
// its own module.
const oneVM = "one-vm:"

// memoryConfig is the proxy's configuration for a case: the plugins named
// (comma separated; "none" for none; after oneVM for firstparty.wasm) on
// the one route.
func memoryConfig(dir, backend, plugins string, gen int) string {
	var b strings.Builder
	b.WriteString("listeners:\n- name: main\n  address: 127.0.0.1:0\nclusters:\n- name: backend\n  endpoints: [{address: \"" + backend + "\"}]\n")
	var filters []string
	if plugins != "none" {
		b.WriteString("plugins:\n")
		names, combined := strings.CutPrefix(plugins, oneVM)
		for _, name := range strings.Split(names, ",") {
			if combined {
				fmt.Fprintf(&b, "- name: %s\n  file: %s/firstparty/firstparty.wasm\n  vm_id: firstparty\n  root_id: %s\n", name, dir, name)
			} else {
				fmt.Fprintf(&b, "- name: %s\n  file: %s/%s/%s.wasm\n", name, dir, name, name)
			}
			fmt.Fprintf(&b, pluginConfig[name], gen)
			filters = append(filters, "{plugin: "+name+"}")
		}
	}
	b.WriteString("virtual_hosts:\n- name: any\n  domains: [\"*\"]\n  routes:\n  - match: {prefix: /}\n    cluster: backend\n")
	if len(filters) > 0 {
		b.WriteString("    filters: [" + strings.Join(filters, ", ") + "]\n")
	}
	return b.String()
}

// TestMemoryChild is not a test: TestMemory runs it in a fresh process per
// case. It serves the case's configuration, prints its address, and then
// answers commands on stdin: "reload" applies the configuration again
// with changed plugin settings, "stats" prints what it holds.
func TestMemoryChild(t *testing.T) {
	plugins := os.Getenv(memCaseEnv)
	if plugins == "" {
		t.Skip("a helper process for TestMemory, run only by it")
	}
	dir, _ := filepath.Abs(".")
	backend := os.Getenv(memBackendEnv)
	// Instances beyond a pool's first retire after 5 s idle, rather than
	// 30, so that the idle figures show a pool that shrank.
	host, err := wasm.NewHost(wasm.Options{CacheDir: os.Getenv(memCacheEnv), Logger: zap.NewNop(), IdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := host.Manager()
	srv := proxy.NewServer(proxy.Options{Plugins: host})
	gen := 0
	apply := func() {
		gen++
		cfg, err := config.Parse([]byte(memoryConfig(dir, backend, plugins, gen)), "memory.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Apply(context.Background(), cfg, ""); err != nil {
			t.Fatal(err)
		}
	}
	apply()
	fmt.Printf("addr %s\n", srv.Addr("main"))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "reload":
			apply()
			fmt.Println("ok")
		case "stats":
			st := m.Stats()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Printf("stats rss=%d code=%d heap=%d linear=%d vms=%d instances=%d goruntime=%d\n",
				procKB("/proc/self/status", "VmRSS:")<<10, execAnonRSS()<<10, ms.HeapInuse,
				st.LinearMemoryBytes, st.VMs, st.Instances, ms.Sys-ms.HeapSys)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	m.Close()
}

// procKB reads a "Name: N kB" line of a /proc status file.
func procKB(file, key string) uint64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key) {
			f := strings.Fields(line)
			if len(f) >= 2 {
				n, _ := strconv.ParseUint(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}

// execAnonRSS is the resident size, in KiB, of anonymous executable
// mappings: the machine code wazero compiled or loaded from its cache.
func execAnonRSS() uint64 {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0
	}
	var total uint64
	exec := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && len(f[1]) == 4 {
			exec = f[1][2] == 'x' && len(f) == 5 // no path: anonymous
			continue
		}
		if exec && len(f) >= 2 && f[0] == "Rss:" {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			total += n
		}
	}
	return total
}

// memChild is a running proxy process of TestMemory.
type memChild struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	addr string
}

func startMemChild(t *testing.T, plugins, backend, cache string) *memChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryChild$", "-test.v")
	cmd.Env = append(os.Environ(), memCaseEnv+"="+plugins, memBackendEnv+"="+backend, memCacheEnv+"="+cache)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &memChild{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	c.addr = strings.TrimPrefix(c.expect(t, "addr "), "addr ")
	return c
}

// expect reads lines until one starts with prefix.
func (c *memChild) expect(t *testing.T, prefix string) string {
	t.Helper()
	for c.out.Scan() {
		if strings.HasPrefix(c.out.Text(), prefix) {
			return c.out.Text()
		}
	}
	t.Fatalf("proxy process ended before %q", prefix)
	return ""
}

func (c *memChild) command(t *testing.T, cmd, reply string) string {
	t.Helper()
	fmt.Fprintln(c.in, cmd)
	return c.expect(t, reply)
}

// rss is the process's VmRSS in MiB.
func (c *memChild) rss() float64 {
	return float64(procKB(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid), "VmRSS:")) / 1024
}

// drive sends requests to url at rate per second for d, from workers
// goroutines, and returns the requests answered, those that did not get
// 200, and the highest RSS of child seen meanwhile.
func drive(t *testing.T, c *memChild, rate int, d time.Duration) (done, failed int, peak float64) {
	url := "http://" + c.addr + "/orders/1"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 5 * time.Second}
	work := make(chan struct{}, rate)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				resp, err := client.Get(url)
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				done++
				if !ok {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	end := time.Now().Add(d)
	for now := range tick.C {
		if now.After(end) {
			break
		}
		for range rate / 100 {
			select {
			case work <- struct{}{}:
			default: // the proxy cannot keep up: do not queue
			}
		}
		peak = max(peak, c.rss())
	}
	tick.Stop()
	close(work)
	wg.Wait()
	return done, failed, peak
}

// TestMemory prints the proxy's resident memory with the first-party
// filters, each case in a fresh process: no filter; each filter alone;
// all three from their own modules; all three from firstparty.wasm in one
// VM idle, at 2,000 requests a second, and before and after 100 reloads.
// VmRSS from /proc; compiled code is the anonymous executable mappings;
// linear memory is the instances' memories. Run with WASMGATE_MEMORY=1.
func TestMemory(t *testing.T) {
	if os.Getenv("WASMGATE_MEMORY") == "" {
		t.Skip("set WASMGATE_MEMORY=1 to measure (starts a proxy process per case)")
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	be := strings.TrimPrefix(backend.URL, "http://")
	cache := filepath.Join(os.TempDir(), "wasmgate-memory-cache")
	three := "authz,encryption,telemetry"
	all := oneVM + three
	// Fill the compilation cache.
	startMemChild(t, three, be, cache)
	startMemChild(t, all, be, cache)

	// idle serves 500 requests a second for a second, then waits for the
	// pool to shrink (5 s idle, checked every 2.5 s) and the freed memory
	// to go back to the OS.
	idle := func(c *memChild) string {
		if _, failed, _ := drive(t, c, 500, time.Second); failed > 0 {
			t.Errorf("%d requests failed", failed)
		}
		time.Sleep(10 * time.Second)
		return c.command(t, "stats", "stats ")
	}
	cases := []string{"none", "authz", "encryption", "telemetry", three,
		oneVM + "authz", oneVM + "encryption", oneVM + "telemetry", all}
	if only := os.Getenv("WASMGATE_MEMORY_CASES"); only != "" {
		cases = strings.Split(only, " ")
	}
	for _, tc := range cases {
		c := startMemChild(t, tc, be, cache)
		st := idle(c)
		t.Logf("%-36s idle: VmRSS %6.1f MiB  (%s)", tc, c.rss(), st)
	}

	c := startMemChild(t, all, be, cache)
	done, failed, peak := drive(t, c, 2000, 10*time.Second)
	st := c.command(t, "stats", "stats ")
	t.Logf("%-36s at 2,000 req/s for 10 s: peak VmRSS %6.1f MiB, %d requests, %d failed (%s)", all, peak, done, failed, st)
	if failed > 0 {
		t.Errorf("%d requests failed at 2,000 req/s", failed)
	}

	// The first reloads fill the proxy's caches; flat means flat after
	// them.
	c = startMemChild(t, all, be, cache)
	for range 10 {
		c.command(t, "reload", "ok")
	}
	before := idle(c)
	rssBefore := c.rss()
	for range 100 {
		c.command(t, "reload", "ok")
	}
	after := idle(c)
	t.Logf("%-36s before 100 reloads: VmRSS %6.1f MiB (%s)", all, rssBefore, before)
	t.Logf("%-36s after 100 reloads:  VmRSS %6.1f MiB (%s)", all, c.rss(), after)
}
