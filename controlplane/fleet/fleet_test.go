// Package fleet_test runs the whole configuration path: a change written
// through the control plane's store into etcd, three proxies watching it,
// and clients measuring when each proxy serves the change.
package fleet_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
	"github.com/wasmgate/wasmgate/controlplane/watch"
	"github.com/wasmgate/wasmgate/proxy"
)

// defaultApplies is the number of changes TestFleetConvergesUnderLoad
// applies; fewer under the race detector.
var defaultApplies = 100

var applies = flag.Int("applies", 0, "changes applied in TestFleetConvergesUnderLoad (0: 100, or 20 under -race)")

func TestMain(m *testing.M) { etcdtest.Main(m) }

// fleetConfig serves /v with a fixed answer naming the version, and every
// other path from a real upstream.
func fleetConfig(upstream string, version int) *config.Config {
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "main", Address: "127.0.0.1:0"}},
		Clusters:  []config.Cluster{{Name: "app", Endpoints: []config.Endpoint{{Address: upstream}}}},
		VirtualHosts: []config.VirtualHost{{
			Name:    "all",
			Domains: []string{"*"},
			Routes: []config.Route{
				{Name: "version", Match: config.RouteMatch{Path: "/v"}, DirectResponse: &config.DirectResponse{Status: 200, Body: strconv.Itoa(version)}},
				{Name: "app", Cluster: "app"},
			},
		}},
	}
	cfg.Normalize()
	return cfg
}

type fleetProxy struct {
	srv  *proxy.Server
	w    *watch.Watcher
	base string
}

func startProxy(t *testing.T, ctx context.Context, prefix string) *fleetProxy {
	t.Helper()
	p := &fleetProxy{srv: proxy.NewServer(proxy.Options{})}
	t.Cleanup(func() { _ = p.srv.Shutdown(context.Background()) })
	w, err := watch.New(watch.Options{
		Client: etcdtest.Client(t),
		Prefix: prefix,
		Apply: func(cfg *config.Config, rev int64) error {
			return p.srv.Apply(ctx, cfg, strconv.FormatInt(rev, 10))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.w = w
	go func() { _ = w.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for p.srv.Addr("main") == nil {
		if time.Now().After(deadline) {
			t.Fatal("the proxy got no configuration")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.base = "http://" + p.srv.Addr("main").String()
	return p
}

func startUpstream(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("app") }}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Shutdown() })
	return ln.Addr().String()
}

// TestFleetConvergesUnderLoad applies changes one after another while
// clients keep every proxy busy. Each change must be served by all three
// proxies, and no request may fail. It logs the time from the store's
// write to the last proxy serving the change.
func TestFleetConvergesUnderLoad(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prefix := etcdtest.Prefix(t)
	st := store.New(etcdtest.Client(t), prefix)
	up := startUpstream(t)
	if _, err := st.Apply(ctx, store.Change{Put: resource.Split(fleetConfig(up, 0)), Author: "test"}); err != nil {
		t.Fatal(err)
	}
	proxies := []*fleetProxy{startProxy(t, ctx, prefix), startProxy(t, ctx, prefix), startProxy(t, ctx, prefix)}

	// Load: two keep-alive clients per proxy, nonstop.
	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, p := range proxies {
		for range 2 {
			wg.Add(1)
			go func(base string) {
				defer wg.Done()
				client := &http.Client{Timeout: 5 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					sent.Add(1)
					resp, err := client.Get(base + "/app")
					if err == nil {
						body, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 || string(body) != "app" {
							err = fmt.Errorf("status %d, body %q", resp.StatusCode, body)
						}
					}
					if err != nil {
						failed.Add(1)
						firstFailure.CompareAndSwap(nil, err.Error())
					}
				}
			}(p.base)
		}
	}

	poll := &http.Client{Timeout: 2 * time.Second}
	served := func(p *fleetProxy, want string) bool {
		resp, err := poll.Get(p.base + "/v")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body) == want
	}
	n := *applies
	if n == 0 {
		n = defaultApplies
	}
	var lat []time.Duration
	for i := 1; i <= n; i++ {
		cfg := fleetConfig(up, i)
		vh := cfg.VirtualHosts[0]
		start := time.Now()
		if _, err := st.Apply(ctx, store.Change{Put: resource.Set{{Kind: resource.VirtualHosts, Name: vh.Name}: &vh}, Author: "test"}); err != nil {
			t.Fatal(err)
		}
		want := strconv.Itoa(i)
		for _, p := range proxies {
			deadline := time.Now().Add(10 * time.Second)
			for !served(p, want) {
				if time.Now().After(deadline) {
					t.Fatalf("change %d: %s never served it", i, p.base)
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
		lat = append(lat, time.Since(start))
	}
	close(stop)
	wg.Wait()

	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed during the changes; the first: %v", n, sent.Load(), firstFailure.Load())
	}
	for _, p := range proxies {
		if st := p.w.Status(); st.LastError != "" {
			t.Errorf("%s: last error %q", p.base, st.LastError)
		}
	}
	slices.Sort(lat)
	q := func(f float64) time.Duration { return lat[int(f*float64(len(lat)-1))] }
	t.Logf("%d changes, 3 proxies, %d requests (0 may fail): store write to the last proxy serving it: p50 %v, p90 %v, p99 %v, max %v",
		len(lat), sent.Load(), q(.5), q(.9), q(.99), lat[len(lat)-1])
}
