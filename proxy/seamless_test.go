package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestListenerChangeUnderLoad reloads, under load, configurations that
// change a listener's settings: each reload puts a new generation of the
// listener on the same socket; old keep-alive connections are closed
// only after a response that says Connection: close. Clients send POSTs,
// which net/http never sends again on its own, so a connection cut under
// a request would show as an error: there must be none.
func TestListenerChangeUnderLoad(t *testing.T) {
	_, v := startEchoes(t, "a")
	const cfg = `
admin: {address: "off"}
listeners: [{name: main, address: "{{addr}}", idle_timeout: {{idle}}}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, cluster: a}]
`
	v["addr"], v["idle"] = "127.0.0.1:0", "30s"
	e := newEnv(t, cfg, v)
	v["addr"] = e.addr(t, "main")
	url := "http://" + v["addr"] + "/load"

	const clients, maxPerClient = 4, 3000
	var stop atomic.Bool
	var sent, failed, closed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for i := 0; i < maxPerClient && !stop.Load(); i++ {
				resp, err := c.Post(url, "text/plain", strings.NewReader("payload"))
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Close {
					closed.Add(1)
				}
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, resp.Status)
				}
			}
		}()
	}
	for i := range 6 {
		// Wait for some traffic on this generation, then change it.
		for n := sent.Load(); sent.Load() < n+50 && sent.Load() < clients*maxPerClient; {
			time.Sleep(time.Millisecond)
		}
		v["idle"] = []string{"31s", "30s"}[i%2]
		e.apply(t, cfg, v)
	}
	stop.Store(true)
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d requests failed across listener changes; first: %v", f, sent.Load(), firstErr.Load())
	}
	if closed.Load() == 0 {
		t.Errorf("no response closed its connection: the old generations were not drained")
	}
	t.Logf("%d requests, %d connections closed between requests", sent.Load(), closed.Load())
}
