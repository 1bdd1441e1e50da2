package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/internal/testaddr"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/watch"
)

const bundle = `
listeners:
  - name: main
    address: 127.0.0.1:8080
virtual_hosts:
  - name: web
    domains: ["*"]
    routes:
      - match: {prefix: /api}
        cluster: api
clusters:
  - name: api
    endpoints: [{address: 127.0.0.1:9001}]
`

// recorder keeps the latest configuration a watcher applied.
type recorder struct {
	mu  sync.Mutex
	rev int64
	cfg *config.Config
	n   int
}

func (r *recorder) apply(cfg *config.Config, rev int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg, r.rev = cfg, rev
	r.n++
	return nil
}

func (r *recorder) waitRev(t *testing.T, rev int64) *config.Config {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.mu.Lock()
		cfg, got := r.cfg, r.rev
		r.mu.Unlock()
		if got >= rev {
			return cfg
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watcher is at revision %d, want %d", got, rev)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStartEmbedded(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := controlplane.Start(ctx, controlplane.Options{
		DataDir: dir, EtcdClientAddr: "127.0.0.1:0", EtcdPeerAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
		Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tok := s.GeneratedToken()
	if b, _ := os.ReadFile(filepath.Join(dir, "admin.token")); strings.TrimSpace(string(b)) != tok || tok == "" {
		t.Fatal("the generated token was not written")
	}
	c := &api.Client{Server: s.APIURL(), Token: tok}
	res, err := c.Apply(ctx, []byte(bundle), api.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// A proxy watches the control plane's etcd and registers itself.
	var rec recorder
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go watch.Run(wctx, watch.Options{Client: s.Client, Bootstrap: &config.Config{Node: config.Node{ID: "proxy-1"}}, Apply: rec.apply,
		Register: &watch.Registration{Address: "127.0.0.1:8080", Version: "test"}})
	rec.waitRev(t, res.Revision)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Proxies) == 1 && st.Converged && st.Proxies[0].Revision >= res.Revision {
			if st.Proxies[0].NodeID != "proxy-1" || st.Proxies[0].Version != "test" {
				t.Fatalf("status = %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fleet did not converge: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A second control plane on the same etcd serves the same state.
	s2, err := controlplane.Start(ctx, controlplane.Options{DataDir: dir, EtcdEndpoints: s.EtcdEndpoints(), APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	doc, err := (&api.Client{Server: s2.APIURL(), Token: tok}).Config(ctx)
	if err != nil || doc.ChangeRevision != res.Revision || len(doc.Config.Clusters) != 1 {
		t.Fatalf("second control plane: %+v, %v", doc, err)
	}
}

// TestExternalCluster runs three etcd members (Debian's etcd-server) on
// loopback, points a control plane and a watcher at them, and kills one
// member in the middle of a stream of changes.
func TestExternalCluster(t *testing.T) {
	bin := os.Getenv("WASMGATE_ETCD_BINARY")
	if bin == "" {
		bin = "/usr/bin/etcd"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no etcd binary at %s (apt-get install etcd-server)", bin)
	}
	dir := t.TempDir()
	type member struct {
		name, client, peer string
		cmd                *exec.Cmd
	}
	var members []*member
	var initial []string
	for i := range 3 {
		m := &member{name: fmt.Sprintf("m%d", i), client: testaddr.Free(t), peer: testaddr.Free(t)}
		members = append(members, m)
		initial = append(initial, m.name+"=http://"+m.peer)
	}
	var endpoints []string
	for _, m := range members {
		m.cmd = exec.Command(bin,
			"--name", m.name, "--data-dir", filepath.Join(dir, m.name),
			"--listen-client-urls", "http://"+m.client, "--advertise-client-urls", "http://"+m.client,
			"--listen-peer-urls", "http://"+m.peer, "--initial-advertise-peer-urls", "http://"+m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "wasmgate-test", "--heartbeat-interval", "50", "--election-timeout", "500")
		log, _ := os.Create(filepath.Join(dir, m.name+".log"))
		m.cmd.Stdout, m.cmd.Stderr = log, log
		m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := m.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.cmd.Process.Kill(); m.cmd.Wait() })
		endpoints = append(endpoints, "http://"+m.client)
	}
	ctx := context.Background()
	s, err := controlplane.Start(ctx, controlplane.Options{DataDir: dir, EtcdEndpoints: endpoints, APIAddr: "127.0.0.1:0",
		Tokens: []api.Token{{Name: "ops", Role: api.RoleAdmin, Secret: "ops-secret-0123456789"}}})
	if err != nil {
		for _, m := range members {
			b, _ := os.ReadFile(filepath.Join(dir, m.name+".log"))
			t.Logf("%s log:\n%s", m.name, b)
		}
		t.Fatal(err)
	}
	defer s.Close()
	c := &api.Client{Server: s.APIURL(), Token: "ops-secret-0123456789"}
	if _, err := c.Apply(ctx, []byte(bundle), api.Options{}); err != nil {
		t.Fatal(err)
	}
	wcli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer wcli.Close()
	var rec recorder
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, _ := watch.New(watch.Options{Client: wcli, Apply: rec.apply})
	go w.Run(wctx)

	var last int64
	for i := range 40 {
		if i == 10 {
			// Kill the member the clients dialed first.
			members[0].cmd.Process.Kill()
			members[0].cmd.Wait()
		}
		doc := strings.Replace(bundle, "127.0.0.1:9001", fmt.Sprintf("127.0.0.1:%d", 9100+i), 1)
		var res *api.ChangeResult
		for attempt := 0; ; attempt++ {
			res, err = c.Apply(ctx, []byte(doc), api.Options{})
			var ae *api.Error
			if err == nil || attempt > 50 || !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
				break
			}
			t.Logf("change %d: %v; retrying", i, err)
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		last = res.Revision
	}
	cfg := rec.waitRev(t, last)
	if got := cfg.Clusters[0].Endpoints[0].Address; got != "127.0.0.1:9139" {
		t.Fatalf("after 40 changes the watcher has %s", got)
	}
	if st := w.Status(); st.LastError != "" || st.FromCache {
		t.Fatalf("watcher status = %+v", st)
	}
}
