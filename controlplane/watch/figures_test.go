package watch_test

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
	"github.com/wasmgate/wasmgate/controlplane/watch"
)

var figures = flag.Bool("figures", false, "measure apply-to-Apply latency over 100 applies and print the figures")

// bigConfig is a configuration of n virtual hosts of 10 routes each, and
// n clusters.
func bigConfig(n int) *config.Config {
	cfg := base()
	cfg.VirtualHosts = nil
	cfg.Clusters = nil
	for i := range n {
		vh := config.VirtualHost{Name: fmt.Sprintf("vh%03d", i), Domains: []string{fmt.Sprintf("h%d.example.com", i)}}
		for j := range 10 {
			vh.Routes = append(vh.Routes, config.Route{Match: config.RouteMatch{Prefix: fmt.Sprintf("/r%d", j)}, Cluster: fmt.Sprintf("c%03d", i)})
		}
		cfg.VirtualHosts = append(cfg.VirtualHosts, vh)
		cfg.Clusters = append(cfg.Clusters, config.Cluster{Name: fmt.Sprintf("c%03d", i), Endpoints: []config.Endpoint{{Address: fmt.Sprintf("127.0.0.1:%d", 10000+i)}}})
	}
	return cfg
}

// TestTrafficPerChange checks that a one-route change reaches a watcher
// through its watch alone: no range request, and bytes in proportion to
// the change, not to the configuration.
func TestTrafficPerChange(t *testing.T) {
	prefix := etcdtest.Prefix(t)
	st := store.New(etcdtest.Client(t), prefix)
	cfg := bigConfig(100)
	if _, err := st.Apply(context.Background(), store.Change{Put: resource.Split(cfg)}); err != nil {
		t.Fatal(err)
	}
	var cnt counter
	cli := etcdtest.ClientOf(t, etcdtest.Endpoints(t), cnt.options)
	a := newApplied()
	startWatcher(t, watch.Options{Client: cli, Prefix: prefix, Apply: a.apply})
	a.until(t, "the first configuration", func(call) bool { return true })
	listRanges, listTxns, listBytes := cnt.ranges.Load(), cnt.txns.Load(), cnt.readBytes.Load()

	vh := cfg.VirtualHosts[42]
	vh.Routes[3].Timeout = config.Duration(7 * time.Second)
	vb, _ := resource.Encode(&vh)
	w0, b0 := cnt.watchMsgs.Load(), cnt.watchBytes.Load()
	res, err := st.Apply(context.Background(), store.Change{Put: resource.Set{{Kind: resource.VirtualHosts, Name: vh.Name}: &vh}})
	if err != nil {
		t.Fatal(err)
	}
	a.until(t, "the one-route change", atRev(res.Revision))
	ranges, txns := cnt.ranges.Load()-listRanges, cnt.txns.Load()-listTxns
	msgs, bytes := cnt.watchMsgs.Load()-w0, cnt.watchBytes.Load()-b0
	t.Logf("initial list: 1 txn of 5 ranges, %d bytes for %d resources", listBytes, 200+1)
	t.Logf("one-route change: %d range requests, %d txns, %d watch messages, %d watch bytes (the virtual host's value is %d bytes)", ranges, txns, msgs, bytes, len(vb))
	if ranges != 0 || txns != 0 {
		t.Fatalf("a one-route change made the watcher read etcd: %d ranges, %d txns", ranges, txns)
	}
	// The change arrives with its head and history keys: the value, its
	// before and after in the history entry, and framing.
	if limit := int64(4*len(vb) + 1024); bytes > limit {
		t.Fatalf("%d watch bytes for a %d-byte change (limit %d)", bytes, len(vb), limit)
	}
	if bytes*10 > listBytes {
		t.Fatalf("a one-route change cost %d bytes, the whole list %d", bytes, listBytes)
	}
}

// TestApplyLatency measures the time from a change submitted to the store
// to the watcher's Apply call, over 100 changes (with -figures; 10
// otherwise).
func TestApplyLatency(t *testing.T) {
	n := 10
	if *figures {
		n = 100
	}
	for _, debounce := range []time.Duration{15 * time.Millisecond, time.Millisecond} {
		t.Run(fmt.Sprintf("debounce=%v", debounce), func(t *testing.T) {
			prefix := etcdtest.Prefix(t)
			st := store.New(etcdtest.Client(t), prefix)
			if _, err := st.Apply(context.Background(), store.Change{Put: resource.Split(bigConfig(20))}); err != nil {
				t.Fatal(err)
			}
			a := newApplied()
			startWatcher(t, watch.Options{Client: etcdtest.Client(t), Prefix: prefix, Apply: a.apply, Debounce: debounce})
			a.until(t, "the first configuration", func(call) bool { return true })
			var submit, land []time.Duration
			for i := range n {
				c := bigConfig(20).Clusters[7]
				c.Endpoints[0].Address = fmt.Sprintf("127.0.0.1:%d", 30000+i)
				start := time.Now()
				res, err := st.Apply(context.Background(), store.Change{Put: resource.Set{{Kind: resource.Clusters, Name: c.Name}: &c}})
				if err != nil {
					t.Fatal(err)
				}
				written := time.Now()
				got := a.until(t, "the change", atRev(res.Revision))
				submit = append(submit, got.at.Sub(start))
				land = append(land, got.at.Sub(written))
			}
			p := func(ds []time.Duration, q float64) time.Duration {
				s := slices.Clone(ds)
				slices.Sort(s)
				return s[min(len(s)-1, int(q*float64(len(s))))].Round(10 * time.Microsecond)
			}
			t.Logf("%d applies, debounce %v: submit->Apply p50 %v p99 %v max %v; committed->Apply p50 %v p99 %v",
				n, debounce, p(submit, 0.5), p(submit, 0.99), p(submit, 1), p(land, 0.5), p(land, 0.99))
		})
	}
}
