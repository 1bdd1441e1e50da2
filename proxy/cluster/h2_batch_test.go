package cluster

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// writeCounter counts the writes to a connection.
type writeCounter struct {
	net.Conn
	n *atomic.Int64
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// TestH2ClientBatchesHeaders: requests that are ready at once, as those
// one poll of the network wakes, send their HEADERS frames in a few
// writes between them, not one write each; on one thread, as a sidecar
// runs.
func TestH2ClientBatchesHeaders(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c := localH2(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	var writes atomic.Int64
	wrap := c.tr.wrap
	c.tr.wrap = func(raw net.Conn) net.Conn { return &writeCounter{Conn: wrap(raw), n: &writes} }
	do := func() error {
		var req fasthttp.Request
		var resp fasthttp.Response
		req.SetRequestURI("/")
		req.Header.SetHost("upstream")
		var s Body
		return c.do(&req, &resp, 5*time.Second, &s)
	}
	if err := do(); err != nil { // the connection, its preface and settings
		t.Fatal(err)
	}
	const requests = 32
	for round := 0; round < 3; round++ {
		start := writes.Load()
		release := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, requests)
		for range requests {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-release
				errs <- do()
			}()
		}
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		n := writes.Load() - start
		t.Logf("round %d: %d requests in %d writes", round, requests, n)
		if n > requests/4 {
			t.Errorf("round %d: %d requests took %d writes; want at most %d", round, requests, n, requests/4)
		}
	}
}
