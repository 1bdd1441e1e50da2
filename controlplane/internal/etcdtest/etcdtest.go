// Package etcdtest runs one embedded etcd per test package, on loopback
// ports in a temporary directory, and hands each test a client and a
// prefix of its own.
package etcdtest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/controlplane/internal/embedded"
)

var (
	mu     sync.Mutex
	shared *embedded.Etcd
	dir    string
)

// Main runs the package's tests and stops the shared etcd after them. Call
// it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	if shared != nil {
		shared.Close()
		os.RemoveAll(dir)
	}
	mu.Unlock()
	os.Exit(code)
}

// Endpoints starts the shared etcd on first use and returns its client
// URLs.
func Endpoints(t testing.TB) []string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if shared == nil {
		d, err := os.MkdirTemp("", "wasmgate-etcd-")
		if err != nil {
			t.Fatal(err)
		}
		e, err := embedded.Start(embedded.Config{Dir: d, NoFsync: true})
		if err != nil {
			os.RemoveAll(d)
			t.Fatalf("starting embedded etcd: %v", err)
		}
		shared, dir = e, d
	}
	return shared.Endpoints()
}

// Client returns a client of the shared etcd, closed when the test ends.
func Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return ClientOf(t, Endpoints(t))
}

// ClientOf returns a client of the given endpoints, closed when the test
// ends.
func ClientOf(t testing.TB, endpoints []string, opts ...func(*clientv3.Config)) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	for _, o := range opts {
		o(&cfg)
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Prefix returns a key prefix unique to the test.
func Prefix(t testing.TB) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return fmt.Sprintf("/test/%s/%d", name, time.Now().UnixNano())
}
