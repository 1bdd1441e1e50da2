package cluster

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
)

// A burst opens several connections; the steady trickle after it reuses
// the connection released last, so the others stay idle and are closed
// after the cluster's idle timeout. Reusing the one idle longest instead
// would keep every connection of the burst alive.
func TestBurstConnectionsCloseWhenIdle(t *testing.T) {
	const burst = 4
	var (
		mu      sync.Mutex
		arrived int
		release = make(chan struct{})
	)
	addr := serveRaw(t, func(c net.Conn) {
		// The first request on each connection waits until the whole
		// burst has arrived, so the burst needs burst connections.
		mu.Lock()
		arrived++
		if arrived == burst {
			close(release)
		}
		mu.Unlock()
		<-release
		answer(c, 0, 0)
	})
	const idle = 300 * time.Millisecond
	c := testCluster(t, NewPools(), config.Cluster{Endpoints: eps(addr), IdleTimeout: config.Duration(idle)})
	e := c.Endpoints()[0]

	var wg sync.WaitGroup
	for range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := doRequest(t, e, []byte("x"), 5*time.Second); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := e.Conns(); n != burst {
		t.Fatalf("%d connections after a burst of %d", n, burst)
	}

	// Sequential requests, more often than the idle timeout.
	deadline := time.Now().Add(10 * idle)
	for time.Now().Before(deadline) {
		if _, err := doRequest(t, e, []byte("x"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if e.Conns() == 1 {
			return
		}
		time.Sleep(idle / 10)
	}
	t.Fatalf("%d connections after %v of sequential requests, want 1", e.Conns(), 10*idle)
}
