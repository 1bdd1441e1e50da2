package identity_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/proxy/identity"
)

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHop sends requests through two proxies, A then B, in front of
// an app, with the hop between them in plain text or mTLS with workload
// certificates. Connections are kept alive, so the handshakes are not in
// the figure (BenchmarkMeshHandshake in proxy/tlsconf measures those).
// cpu-us/req is the whole process's CPU time (client, both proxies and
// the app, all in this binary) per request: the difference between the
// two is the cost of the mTLS hop.
func BenchmarkHop(b *testing.B) {
	cp := startMeshCP(b, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := zap.NewNop()
	agents := map[string]*identity.Agent{"a": startAgent(b, ctx, cp, "a", log), "b": startAgent(b, ctx, cp, "b", log)}
	app := startApp(b)
	for _, mode := range []string{"plain", "mtls"} {
		b.Run(mode, func(b *testing.B) {
			mesh := mode == "mtls"
			pb := startProxy(b, agents["b"], hopConfig(mesh, app, false, "", 0))
			pa := startProxy(b, agents["a"], hopConfig(false, pb.Addr("in").String(), mesh, "spiffe://wasmgate.local/ns/shop/sa/b", 0))
			c := &fasthttp.HostClient{Addr: pa.Addr("in").String(), MaxConns: 64}
			url := "http://" + pa.Addr("in").String() + "/"
			warm := func() {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.SetRequestURI(url)
				if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					b.Fatalf("%v %d", err, resp.StatusCode())
				}
			}
			warm()
			b.ReportAllocs()
			b.SetParallelism(4)
			start := cpuTime(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.SetRequestURI(url)
				for pb.Next() {
					if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
						b.Errorf("%v %d", err, resp.StatusCode())
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-start).Microseconds())/float64(b.N), "cpu-us/req")
		})
	}
}
