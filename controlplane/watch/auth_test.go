package watch_test

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmgate/wasmgate/controlplane/internal/embedded"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
	"github.com/wasmgate/wasmgate/controlplane/watch"
)

// TestSurvivesExpiredAuthToken runs a watcher against an etcd with auth
// enabled and one-second tokens: after its token has expired and its
// connection has been cut, it logs in again by itself and keeps following
// changes.
func TestSurvivesExpiredAuthToken(t *testing.T) {
	e, err := embedded.Start(embedded.Config{Dir: t.TempDir(), NoFsync: true, AuthTokenTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	ctx := context.Background()
	admin := etcdtest.ClientOf(t, e.Endpoints())
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "root-pw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	login := func(c *clientv3.Config) { c.Username, c.Password = "root", "root-pw" }
	writer := etcdtest.ClientOf(t, e.Endpoints(), login)
	prefix := etcdtest.Prefix(t)
	st := store.New(writer, prefix)
	first, err := st.Apply(ctx, store.Change{Put: resource.Split(base())})
	if err != nil {
		t.Fatal(err)
	}

	gate := etcdtest.NewGate(t, strings.TrimPrefix(e.Endpoints()[0], "http://"))
	cli := etcdtest.ClientOf(t, []string{gate.Endpoint()}, login)
	a := newApplied()
	w := startWatcher(t, watch.Options{Client: cli, Prefix: prefix, Apply: a.apply})
	a.until(t, "the first configuration", atRev(first.Revision))

	time.Sleep(2500 * time.Millisecond) // the watcher's token expires
	gate.Cut()
	time.Sleep(300 * time.Millisecond)
	gate.Open()

	res := setAddr(t, st, "127.0.0.1:9009")
	c := a.until(t, "the change after the token expired", atRev(res.Revision))
	if got := clusterAddr(c.cfg, "api"); got != "127.0.0.1:9009" {
		t.Fatalf("after the change: %s", got)
	}
	if s := w.Status(); s.FromCache {
		t.Errorf("status = %+v", s)
	}
}
