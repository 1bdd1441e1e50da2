package sidecar_test

import (
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/mesh/sidecar"
)

// BenchmarkTwoSidecars sends requests from a client through web's
// outbound listener, mTLS (HTTP/2) to orders' inbound listener with its
// policy filter, to orders' app, all on loopback in this process; and,
// for comparison, from the same client to the app directly. Besides the
// time per request it reports cpu-us/op: the process's CPU time (user and
// system, every goroutine: the client and the app too) per request, so
// the pair of sidecars costs the difference of the two. req-cpu-us/op
// leaves out what the process spends per second when no request runs
// (measured for a second before each run), which a slower run would
// otherwise count against fewer requests. The sidecars
// register under the default lease (10 s), renewed every third of it, as
// in production: the tests' 2 s lease would add its renewals' work, done
// per second and not per request, to the slower of the two.
// two-sidecars-downstream is the same with hop_protocol: downstream, so
// the client's HTTP/1.1 crosses in HTTP/1.1 (over mTLS) where the default
// upgrades it to HTTP/2; its mesh runs beside the first, idle while the
// other is measured. BenchmarkSidecarProcesses measures the same path
// with each sidecar a process of its own, as in production. With -cpu 1
// everything here shares one thread, as each sidecar has one of its own
// in production; with two, each hand-off between goroutines may also
// wake the other thread, which the sidecars do not pay as processes.
//
//	go test -run '^$' -bench TwoSidecars -benchtime 20000x -cpu 1 ./mesh/sidecar
func BenchmarkTwoSidecars(b *testing.B) {
	m := startMeshWith(b, false, 10*time.Second)
	down := startMeshHop(b, false, 10*time.Second, sidecar.HopDownstream)
	b.Run("direct", func(b *testing.B) { benchRequests(b, fmt.Sprintf("127.0.0.1:%d", m.apps["orders"])) })
	b.Run("two-sidecars", func(b *testing.B) { benchRequests(b, m.sidecar["web"].Settings.Outbound) })
	b.Run("two-sidecars-downstream", func(b *testing.B) { benchRequests(b, down.sidecar["web"].Settings.Outbound) })
}

// benchRequests sends GET / with Host: orders to addr and reports this
// process's CPU per request.
func benchRequests(b *testing.B, addr string) {
	benchRequestsCPU(b, addr, cpuTime, time.Second, "cpu-us/op", "req-cpu-us/op")
}

// benchRequestsCPU sends GET / with Host: orders to addr from
// GOMAXPROCS goroutines and reports, under the metric all, what cpu
// counts per request, and under reqOnly the same less what cpu counts per
// second with no request, measured over idleFor before the run.
func benchRequestsCPU(b *testing.B, addr string, cpu func() time.Duration, idleFor time.Duration, all, reqOnly string) {
	req := func(c *http.Client) error {
		r, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		r.Host = "orders"
		resp, err := c.Do(r)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for range 100 {
		if err := req(client); err != nil {
			b.Fatal(err)
		}
	}
	// What the process does with no request (the embedded etcd's raft
	// ticks, the control plane, the sidecars' renewals), per second.
	idleFrom, idleCPU := time.Now(), cpu()
	time.Sleep(idleFor)
	idle := float64(cpu()-idleCPU) / float64(time.Since(idleFrom))
	b.ReportAllocs()
	start := time.Now()
	before := cpu()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := req(client); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	used, wall := cpu()-before, time.Since(start)
	b.ReportMetric(float64(used.Microseconds())/float64(b.N), all)
	// The same without the idle process's work over the run's time: the
	// requests' own cost.
	b.ReportMetric((float64(used)-idle*float64(wall))/1e3/float64(b.N), reqOnly)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
