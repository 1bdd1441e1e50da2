package proxy_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
)

const lifetimeConfig = `
admin: {address: "off"}
access_log: {path: "{{log}}"}
listeners: [{name: main, address: "{{addr}}", idle_timeout: {{idle}}}]
clusters: [{name: slow, endpoints: [{address: "{{slow}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: slow}]
`

// TestReplacedSnapshotLivesWhileUsed: a request that began before a
// reload which replaced the listener and the access log finishes on the
// old listener and is logged to the old file; the old log closes (and
// the old listener stops) when that request is done, and Shutdown waits
// for it rather than a timer.
func TestReplacedSnapshotLivesWhileUsed(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	slow := testupstream.Start(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
		_, _ = w.Write([]byte("done"))
	}))
	dir := t.TempDir()
	oldLog, newLog := filepath.Join(dir, "old.log"), filepath.Join(dir, "new.log")
	v := vars{"slow": slow.Addr(), "log": oldLog, "addr": "127.0.0.1:0", "idle": "60s"}
	e := newEnv(t, lifetimeConfig, v)
	v["addr"] = e.addr(t, "main")

	held := make(chan response, 1)
	go func() { held <- e.get(t, "", "/hold") }()
	<-entered

	// A changed listener (a new generation on the same socket) and a new
	// access log.
	v["log"], v["idle"] = newLog, "30s"
	e.apply(t, lifetimeConfig, v)
	if r := e.get(t, "", "/after"); r.status != 200 {
		t.Fatalf("after the reload: status %d", r.status)
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- e.srv.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request of the replaced snapshot was in flight", err)
	default:
	}
	close(release)
	if r := <-held; r.status != 200 || string(r.body) != "done" {
		t.Fatalf("the held request: status %d, body %q", r.status, r.body)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Both logs are closed, hence flushed: no waiting needed.
	for path, want := range map[string]string{oldLog: "/hold", newLog: "/after"} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), want) {
			t.Errorf("%s does not log %s:\n%s", filepath.Base(path), want, data)
		}
	}
}
