package discovery_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// countingKV counts the requests a client makes to etcd's key-value API.
type countingKV struct {
	clientv3.KV
	n *atomic.Int64
}

func (c countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c.n.Add(1)
	return c.KV.Get(ctx, key, opts...)
}

func (c countingKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	c.n.Add(1)
	return c.KV.Put(ctx, key, val, opts...)
}

func (c countingKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	c.n.Add(1)
	return c.KV.Delete(ctx, key, opts...)
}

func (c countingKV) Txn(ctx context.Context) clientv3.Txn {
	c.n.Add(1)
	return c.KV.Txn(ctx)
}

// countingWatcher counts the watches a client opens.
type countingWatcher struct {
	clientv3.Watcher
	n *atomic.Int64
}

func (c countingWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	c.n.Add(1)
	return c.Watcher.Watch(ctx, key, opts...)
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// observation is one update a watcher received for one service.
type observation struct {
	service int
	rev     int64
	at      time.Time
}

type change struct {
	service int
	rev     int64
	start   time.Time
}

// TestScale simulates the control plane of a large mesh in one process:
// 1,000 sidecars watching, 10,000 endpoints over 1,000 services (each
// sidecar calls 5 of them), and endpoint churn of 100 changes a second.
// It measures, for each change, the time from the start of its write to
// the moment the last interested sidecar has it; the etcd requests per
// change; and the hub's memory per endpoint and per watcher. Set
// WASMGATE_SCALE_SECONDS to churn for longer than the default 5 s.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("a scale test; run it without -short")
	}
	const (
		services    = 1000
		perService  = 10
		watchers    = 1000
		callsPerW   = 5
		ratePerSec  = 100
		writeWorker = 8
	)
	seconds := 5
	if s, err := strconv.Atoi(os.Getenv("WASMGATE_SCALE_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	ctx := context.Background()
	prefix := etcdtest.Prefix(t)
	keys := resource.NewKeys(prefix)
	name := func(i int) string { return fmt.Sprintf("svc-%04d.ns-%d", i, i%10) }

	writer := etcdtest.Client(t)
	lease, err := writer.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < services; s += 10 {
		var ops []clientv3.Op
		for i := s; i < s+10; i++ {
			for j := range perService {
				ops = append(ops, clientv3.OpPut(keys.Endpoint(name(i), fmt.Sprintf("i%d", j)),
					fmt.Sprintf(`{"address":"10.%d.%d.%d:15006"}`, i/250, i%250, j+1), clientv3.WithLease(lease.ID)))
			}
		}
		if _, err := writer.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}

	var hubRequests, writeRequests atomic.Int64
	// The hub reaches etcd through a gate, to lose its watch later.
	gate := etcdtest.NewGate(t, strings.TrimPrefix(etcdtest.Endpoints(t)[0], "http://"))
	hubCli := etcdtest.ClientOf(t, []string{gate.Endpoint()})
	hubCli.KV = countingKV{hubCli.KV, &hubRequests}
	hubCli.Watcher = countingWatcher{hubCli.Watcher, &hubRequests}
	writer.KV = countingKV{writer.KV, &writeRequests}

	before := heap()
	h := startHub(t, hubCli, prefix)
	loaded := heap()
	if s := h.Stats(); s.Endpoints != services*perService {
		t.Fatalf("the hub holds %d endpoints, want %d", s.Endpoints, services*perService)
	}

	// Each watcher calls 5 services; each service is called by 5 watchers.
	interest := make([][]int, watchers)
	callers := make([][]int, services)
	ws := make([]*discovery.Watch, watchers)
	for w := range watchers {
		var names []string
		for k := range callsPerW {
			s := (w*7 + k*131) % services
			interest[w] = append(interest[w], s)
			callers[s] = append(callers[s], w)
			names = append(names, name(s))
		}
		ws[w] = h.Watch(discovery.Interest{Services: names, Namespace: fmt.Sprintf("ns-%d", w%10), Service: fmt.Sprintf("client-%d", w)})
		u := next(t, ws[w])
		if len(u.Endpoints) != callsPerW || len(u.Endpoints[0].Items) != perService {
			t.Fatalf("watcher %d's first update has %d services", w, len(u.Endpoints))
		}
	}
	watching := heap()
	perEndpoint := float64(loaded-before) / (services * perService)
	perWatcher := float64(watching-loaded) / watchers
	t.Logf("hub memory: %.0f B per endpoint (%d endpoints), %.0f B per watcher (%d watchers, %d endpoints in view each)",
		perEndpoint, services*perService, perWatcher, watchers, callsPerW*perService)

	// Observers: each watcher logs the revision of every snapshot it gets.
	index := map[string]int{}
	for i := range services {
		index[name(i)] = i
	}
	logs := make([][]observation, watchers)
	var logMu sync.Mutex
	var observers sync.WaitGroup
	for w := range watchers {
		observers.Add(1)
		go func() {
			defer observers.Done()
			for {
				u, err := ws[w].Next(context.Background())
				if err != nil {
					return
				}
				now := time.Now()
				logMu.Lock()
				for _, e := range u.Endpoints {
					logs[w] = append(logs[w], observation{index[e.Service], e.Revision, now})
				}
				logMu.Unlock()
			}
		}()
	}

	// Churn: each change adds an instance to a service or removes the one
	// added before, at a fixed rate, from a few writers.
	hubBefore, eventsBefore, writesBefore := hubRequests.Load(), h.Stats().Events, writeRequests.Load()
	total := ratePerSec * seconds
	changes := make([]change, total)
	written := make([]chan struct{}, total)
	for i := range written {
		written[i] = make(chan struct{})
	}
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range writeWorker {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				s := (i / 2 * 37) % services
				key := keys.Endpoint(name(s), fmt.Sprintf("churn-%d", i/2))
				start := time.Now()
				var rev int64
				if i%2 == 0 {
					resp, err := writer.Put(ctx, key, fmt.Sprintf(`{"address":"10.200.%d.%d:15006"}`, i/2/250, i/2%250), clientv3.WithLease(lease.ID))
					if err != nil {
						t.Error(err)
						close(written[i])
						continue
					}
					rev = resp.Header.Revision
				} else {
					resp, err := writer.Delete(ctx, key)
					if err != nil {
						t.Error(err)
						close(written[i])
						continue
					}
					rev = resp.Header.Revision
				}
				changes[i] = change{service: s, rev: rev, start: start}
				close(written[i])
			}
		}()
	}
	began := time.Now()
	for i := range total {
		time.Sleep(time.Until(began.Add(time.Duration(i) * time.Second / ratePerSec)))
		if i%2 == 1 {
			// A removal follows its addition's write.
			<-written[i-1]
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	churn := time.Since(began)

	// Wait until every interested watcher has every change, then measure.
	latency := func() ([]time.Duration, int) {
		logMu.Lock()
		defer logMu.Unlock()
		var out []time.Duration
		missing := 0
		for _, c := range changes {
			var last time.Duration
			for _, w := range callers[c.service] {
				seen := false
				for _, o := range logs[w] {
					if o.service == c.service && o.rev >= c.rev {
						last, seen = max(last, o.at.Sub(c.start)), true
						break
					}
				}
				if !seen {
					missing++
				}
			}
			out = append(out, last)
		}
		return out, missing
	}
	var lat []time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for {
		var missing int
		lat, missing = latency()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries of changes to interested watchers never arrived", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	hubAfterChurn, eventsAfterChurn, writesAfterChurn := hubRequests.Load(), h.Stats().Events, writeRequests.Load()

	// The hub loses its watch; 10 services change; etcd compacts past the
	// hub's revision; the hub comes back. It must read etcd again and
	// send the 10 changed services to their callers, and nothing else to
	// anyone.
	logMu.Lock()
	sent := 0
	for _, l := range logs {
		sent += len(l)
	}
	logMu.Unlock()
	gate.Cut()
	var gap []change
	for k := range 10 {
		s := (k*97 + 3) % services
		resp, err := writer.Put(ctx, keys.Endpoint(name(s), "gap"), `{"address":"10.201.0.1:15006"}`, clientv3.WithLease(lease.ID))
		if err != nil {
			t.Fatal(err)
		}
		gap = append(gap, change{service: s, rev: resp.Header.Revision})
	}
	if _, err := writer.Compact(ctx, gap[len(gap)-1].rev); err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	gate.Open()
	want := 0
	for _, c := range gap {
		want += len(callers[c.service])
	}
	var resync time.Duration
	for deadline := time.Now().Add(30 * time.Second); ; {
		logMu.Lock()
		got := 0
		for _, c := range gap {
			for _, w := range callers[c.service] {
				for _, o := range logs[w] {
					if o.service == c.service && o.rev >= c.rev {
						got++
						break
					}
				}
			}
		}
		logMu.Unlock()
		if got == want {
			resync = time.Since(opened)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the compaction %d of %d deliveries arrived", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, w := range ws {
		w.Close()
	}
	observers.Wait()
	resent := -sent
	for _, l := range logs {
		resent += len(l)
	}
	t.Logf("compaction while the hub was cut off: it read %d endpoints again in one request and sent %d service updates (%d wanted; a full resend would be %d) within %v of reconnecting",
		services*perService, resent, want, watchers*callsPerW, resync.Round(time.Millisecond))
	if resent != want {
		t.Errorf("after the compaction the watchers got %d service updates, want exactly the %d of the changed services", resent, want)
	}
	if s := h.Stats(); s.Lists != 2 {
		t.Errorf("the hub read everything %d times, want once at start and once after the compaction", s.Lists)
	}

	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	events := eventsAfterChurn - eventsBefore
	t.Logf("churn: %d changes in %v (%.0f/s), each to the %d watchers that call the service", total, churn.Round(time.Millisecond), float64(total)/churn.Seconds(), callsPerW)
	t.Logf("registration -> every interested watcher: p50 %v, p90 %v, p99 %v, max %v",
		pct(0.50).Round(time.Microsecond), pct(0.90).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	t.Logf("etcd requests per change: %.2f by the writer, %.2f by the hub (%d watch events for %d changes)",
		float64(writesAfterChurn-writesBefore)/float64(total), float64(hubAfterChurn-hubBefore)/float64(total), events, total)
	if hubAfterChurn != hubBefore {
		t.Errorf("the hub made %d etcd requests during the churn; it should only follow its watch", hubAfterChurn-hubBefore)
	}
	if events != int64(total) {
		t.Errorf("the hub applied %d events for %d changes", events, total)
	}
	// The hub's state per watcher is its interest, not the endpoints it
	// sees: far less than a copy of the 50 endpoints in its view.
	if perWatcher > 4096 {
		t.Errorf("%.0f B per watcher: the hub keeps per-watcher copies", perWatcher)
	}
	if p99 := pct(0.99); p99 > time.Second {
		t.Errorf("p99 %v is over the 1 s target", p99)
	}
}
