package cluster

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
)

// activeHealth is what active health checks learnt of an endpoint.
type activeHealth struct {
	failed atomic.Bool
	// probed is false until the first probe: the first success makes an
	// endpoint that starts unhealthy healthy at once.
	probed atomic.Bool
	// successes and failures in a row; only the checker writes them.
	successes, failures atomic.Int32
}

// checker probes the endpoints of one cluster object from one goroutine
// until stopped. A reload that rebuilds the cluster starts a new checker
// and stops the old one; the endpoints' health lives in their hostState
// and carries over.
type checker struct {
	c        *Cluster
	hc       *config.HealthCheck
	statuses []config.StatusRange
	clients  map[string]*fasthttp.HostClient
	stop     chan struct{}
	done     chan struct{}
}

func newChecker(c *Cluster) *checker {
	hc := c.cfg.HealthCheck
	ch := &checker{c: c, hc: hc, stop: make(chan struct{}), done: make(chan struct{}), clients: map[string]*fasthttp.HostClient{}}
	if hc.Type == config.HealthCheckHTTP {
		ch.statuses, _ = config.ParseStatusRanges(hc.ExpectedStatuses) // validated
		timeout := hc.Timeout.D()
		for _, e := range c.endpoints {
			ch.clients[e.Addr] = &fasthttp.HostClient{
				Addr:                      e.Addr,
				Dial:                      func(addr string) (net.Conn, error) { return fasthttp.DialTimeout(addr, timeout) },
				MaxConns:                  1,
				MaxIdemponentCallAttempts: 1,
				NoDefaultUserAgentHeader:  true,
				MaxIdleConnDuration:       hc.Interval.D() + hc.IntervalJitter.D() + time.Second,
			}
		}
	}
	return ch
}

// run probes every endpoint at once, then again every interval (plus
// jitter), until Close.
func (ch *checker) run() {
	defer close(ch.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ch.stop:
			for _, hc := range ch.clients {
				hc.CloseIdleConnections()
			}
			return
		case <-t.C:
		}
		var wg sync.WaitGroup
		for _, e := range ch.c.endpoints {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ch.record(e, ch.probe(e))
			}()
		}
		wg.Wait()
		d := ch.hc.Interval.D()
		if j := ch.hc.IntervalJitter.D(); j > 0 {
			d += rand.N(j)
		}
		t.Reset(d)
	}
}

// probe makes one health check of e.
func (ch *checker) probe(e *Endpoint) bool {
	timeout := ch.hc.Timeout.D()
	if ch.hc.Type == config.HealthCheckTCP {
		c, err := net.DialTimeout("tcp", e.Addr, timeout)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(ch.hc.Method)
	req.SetRequestURI(ch.hc.Path)
	host := ch.hc.Host
	if host == "" {
		host = e.Addr
	}
	req.Header.SetHost(host)
	req.Header.Set("User-Agent", "wasmgate-health-check")
	resp.SkipBody = ch.hc.Method == "HEAD"
	if err := ch.clients[e.Addr].DoTimeout(req, resp, timeout); err != nil {
		return false
	}
	st := resp.StatusCode()
	for _, r := range ch.statuses {
		if st >= r.Min && st <= r.Max {
			return true
		}
	}
	return false
}

// record applies a probe's result to the endpoint's health and rebuilds
// the cluster's host set on a transition.
func (ch *checker) record(e *Endpoint, ok bool) {
	a := &e.state.active
	first := !a.probed.Swap(true)
	changed := false
	if ok {
		a.failures.Store(0)
		n := a.successes.Add(1)
		if a.failed.Load() && (first || int(n) >= ch.hc.HealthyThreshold) {
			a.failed.Store(false)
			changed = true
		}
	} else {
		a.successes.Store(0)
		n := a.failures.Add(1)
		if !a.failed.Load() && int(n) >= ch.hc.UnhealthyThreshold {
			a.failed.Store(true)
			changed = true
		}
	}
	if changed {
		ch.c.state.stats.HealthChanged(ok)
		e.state.notify()
	}
}

// Close stops the checker and waits for its goroutine.
func (ch *checker) Close() {
	close(ch.stop)
	<-ch.done
}
