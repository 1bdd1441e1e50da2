package sidecar_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
)

// addInstance starts one more instance of service: an app that answers as
// label and its sidecar, in a namespace of their own linked to the
// router. The sidecar registers through the control plane's API.
func (m *netnsMesh) addInstance(t *testing.T, label, service string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := m.net.Namespace(label)
	gw, addr := m.net.Link(m.ns["cp"], ns)
	ns.MustRun("ip", "route", "add", "default", "via", gw.String())
	m.ns[label], m.addr[label], m.gw[label] = ns, addr, gw
	nsApp(t, ns, label)
	tok, err := m.admin.CreateToken(ctx, api.TokenRequest{Namespace: "default", ServiceAccount: service})
	if err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(m.dir, label)
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(own, "trust-bundle.pem")
	if err := os.WriteFile(bundle, m.roots, 0o644); err != nil {
		t.Fatal(err)
	}
	// The API's certificate names the router's address on the first
	// links; any of them is reachable from here through the router.
	return process(t, ns, m.bin, "run", "--sidecar", "--service", service, "--app-port", "8080",
		"--inbound", addr.String()+":15006",
		"--identity-server", "https://"+m.gw["web"].String()+":9900", "--join-token", tok.Token,
		"--trust-bundle-file", bundle, "--identity-dir", filepath.Join(own, "identity"),
		"--wasm-cache-dir", filepath.Join(own, "wasm"), "--cache-file", filepath.Join(own, "cache"),
		"--registration-ttl", "2s", "--access-log", "", "--log-level", "info")
}

// TestNetnsScaling: orders scales up and down while web calls it under
// load. A new instance takes a share of the calls once registered; one
// stopped gracefully (SIGTERM: it deregisters, then drains) fails no
// request; one killed (SIGKILL: no deregistration, its connections reset
// by the kernel) fails at most a few, the rest retried on the other
// instances, and leaves the registry when its lease ends.
func TestNetnsScaling(t *testing.T) {
	m := startNetnsMesh(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	user := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DialContext: nsDialer(m.ns["web"]), MaxIdleConnsPerHost: 16}}
	waitFor(t, "web -> orders", 10*time.Second, func() bool {
		resp, err := user.Get("http://127.0.0.1:8080/?to=orders")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// Load: four callers, each answer counted by the instance that gave it.
	var (
		stop           atomic.Bool
		failed, done   atomic.Int64
		mu             sync.Mutex
		by             = map[string]int{}
		firstFailures  []string
		wg             sync.WaitGroup
		instanceOfBody = func(b string) string {
			// "web -> orders2 (called by ...)"
			_, rest, _ := strings.Cut(b, "-> ")
			name, _, _ := strings.Cut(rest, " ")
			return name
		}
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				resp, err := user.Get("http://127.0.0.1:8080/?to=orders")
				done.Add(1)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					firstFailures = append(firstFailures, err.Error())
					mu.Unlock()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode != 200 {
					failed.Add(1)
					if len(firstFailures) < 5 {
						firstFailures = append(firstFailures, string(b))
					}
				} else {
					by[instanceOfBody(string(b))]++
				}
				mu.Unlock()
			}
		}()
	}
	answered := func(instance string) int {
		mu.Lock()
		defer mu.Unlock()
		return by[instance]
	}
	endpoints := func() int {
		l, err := m.admin.Endpoints(ctx, "orders.default")
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	report := func(phase string) {
		mu.Lock()
		defer mu.Unlock()
		t.Logf("%s: %d requests, %d failed, answered by %v", phase, done.Load(), failed.Load(), by)
	}

	// Up: a second instance takes calls once registered.
	orders2 := m.addInstance(t, "orders2", "orders")
	waitFor(t, "orders2 registered", 30*time.Second, func() bool { return endpoints() == 2 })
	waitFor(t, "orders2 answering", 10*time.Second, func() bool { return answered("orders2") >= 20 })
	report("scaled up to two")

	// Down, gracefully: no request fails.
	stopped := time.Now()
	orders2.Process.Signal(syscall.SIGTERM)
	if err := orders2.Wait(); err != nil {
		t.Fatalf("orders2's sidecar ended with %v on SIGTERM", err)
	}
	if n := endpoints(); n != 1 {
		t.Fatalf("after orders2's graceful stop, %d endpoints registered; want 1", n)
	}
	time.Sleep(500 * time.Millisecond) // more load on the one left
	report("after a graceful stop")
	if f := failed.Load(); f > 0 {
		stop.Store(true)
		wg.Wait()
		t.Fatalf("%d requests failed while an instance scaled up and stopped gracefully (in %v): %q", f, time.Since(stopped), firstFailures)
	}

	// A killed instance: at most a few failures, and its endpoint goes
	// with its lease.
	orders3 := m.addInstance(t, "orders3", "orders")
	waitFor(t, "orders3 registered", 30*time.Second, func() bool { return endpoints() == 2 })
	waitFor(t, "orders3 answering", 10*time.Second, func() bool { return answered("orders3") >= 20 })
	before := done.Load()
	killed := time.Now()
	orders3.Process.Kill()
	orders3.Wait()
	waitFor(t, "orders3's endpoint expiring with its lease", 10*time.Second, func() bool { return endpoints() == 1 })
	gone := time.Since(killed)
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	report("after a kill")
	after := done.Load() - before
	// Requests in flight on the killed sidecar's connections at the
	// moment of the kill may fail; everything after is retried or sent
	// to the instance left.
	if f := failed.Load(); f > 8 {
		t.Fatalf("%d of %d requests failed after an instance was killed; want at most 8: %q", f, after, firstFailures)
	}
	t.Logf("killed instance out of the registry after %v; %d failed of %d requests since the kill", gone, failed.Load(), after)
}
