package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

func newStore(t *testing.T) *store.Store {
	t.Helper()
	return store.New(etcdtest.Client(t), etcdtest.Prefix(t))
}

func base() *config.Config {
	return &config.Config{
		Listeners: []config.Listener{{Name: "main", Address: "127.0.0.1:8080"}},
		VirtualHosts: []config.VirtualHost{{Name: "web", Domains: []string{"*"}, Routes: []config.Route{
			{Match: config.RouteMatch{Prefix: "/api"}, Cluster: "api"},
			{Cluster: "static"},
		}}},
		Clusters: []config.Cluster{
			{Name: "api", Endpoints: []config.Endpoint{{Address: "127.0.0.1:9001"}}},
			{Name: "static", Endpoints: []config.Endpoint{{Address: "127.0.0.1:9002"}}},
		},
	}
}

func apply(t *testing.T, s *store.Store, cfg *config.Config) *store.Result {
	t.Helper()
	res, err := s.Apply(context.Background(), store.Change{Put: resource.Split(cfg), Author: "test"})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

func TestApplyAndSnapshot(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	res := apply(t, s, base())
	if res.Seq != 1 || len(res.Ops) != 4 {
		t.Fatalf("result = seq %d, %d ops; want seq 1, 4 ops", res.Seq, len(res.Ops))
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.ChangeRevision != res.Revision || len(snap.Resources) != 4 {
		t.Fatalf("snapshot: change revision %d (want %d), %d resources", snap.ChangeRevision, res.Revision, len(snap.Resources))
	}
	// Applying the same bundle again changes nothing and writes nothing.
	again := apply(t, s, base())
	if again.Seq != 0 || len(again.Ops) != 0 || again.Revision != res.Revision {
		t.Fatalf("re-apply = %+v, want a no-op at revision %d", again, res.Revision)
	}
	// So does the same bundle with its defaults spelled out, as a proxy
	// reads it.
	normalized := base()
	normalized.Normalize()
	if again := apply(t, s, normalized); len(again.Ops) != 0 {
		t.Fatalf("re-apply with defaults = %+v, want a no-op", again.Ops)
	}
	v, rev, err := s.Get(ctx, resource.Ref{Kind: resource.Clusters, Name: "api"})
	if err != nil || rev != res.Revision || v.(*config.Cluster).Endpoints[0].Address != "127.0.0.1:9001" {
		t.Fatalf("get = %v, %d, %v", v, rev, err)
	}
}

func TestValidationNamesResourceAndField(t *testing.T) {
	s := newStore(t)
	apply(t, s, base())
	vh := base().VirtualHosts[0]
	vh.Routes[1].Cluster = "missing"
	_, err := s.Apply(context.Background(), store.Change{Put: resource.Set{{Kind: resource.VirtualHosts, Name: "web"}: &vh}})
	var ve *store.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a ValidationError", err)
	}
	if len(ve.Errors) != 1 || ve.Errors[0].Resource != "virtual_hosts/web" || ve.Errors[0].Path != "routes[1].cluster" {
		t.Fatalf("errors = %+v", ve.Errors)
	}
	// A whole-configuration problem has no resource.
	_, err = s.Apply(context.Background(), store.Change{Delete: []resource.Ref{{Kind: resource.Listeners, Name: "main"}}})
	if !errors.As(err, &ve) || ve.Errors[0].Path != "listeners" {
		t.Fatalf("deleting the only listener: %v", err)
	}
}

func TestConflictingWriters(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	apply(t, s, base())
	ref := resource.Ref{Kind: resource.Clusters, Name: "api"}
	_, rev, err := s.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	write := func(addr string) error {
		c := base().Clusters[0]
		c.Endpoints[0].Address = addr
		_, err := s.Apply(ctx, store.Change{Put: resource.Set{ref: &c}, IfMatch: map[resource.Ref]int64{ref: rev}})
		return err
	}
	if err := write("127.0.0.1:9101"); err != nil {
		t.Fatalf("first writer: %v", err)
	}
	err = write("127.0.0.1:9102")
	var ce *store.ConflictError
	if !errors.As(err, &ce) || ce.Conflicts[0].Resource != "clusters/api" || ce.Conflicts[0].Expected != rev || ce.Conflicts[0].Current <= rev {
		t.Fatalf("second writer: %v, want a conflict on clusters/api", err)
	}
	v, _, _ := s.Get(ctx, ref)
	if got := v.(*config.Cluster).Endpoints[0].Address; got != "127.0.0.1:9101" {
		t.Fatalf("stored %s, the second writer overwrote the first", got)
	}

	// expected_revision covers deletions, which leave no key behind.
	snap, _ := s.Snapshot(ctx)
	if _, err := s.Apply(ctx, store.Change{Put: resource.Set{{Kind: resource.Clusters, Name: "extra"}: &config.Cluster{Name: "extra", Endpoints: []config.Endpoint{{Address: "127.0.0.1:1"}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, store.Change{Delete: []resource.Ref{{Kind: resource.Clusters, Name: "extra"}}}); err != nil {
		t.Fatal(err)
	}
	stale := store.Change{Put: resource.Set{{Kind: resource.Clusters, Name: "extra"}: &config.Cluster{Name: "extra", Endpoints: []config.Endpoint{{Address: "127.0.0.1:2"}}}}, ExpectedRevision: snap.Revision}
	if _, err := s.Apply(ctx, stale); !errors.As(err, &ce) || !strings.Contains(ce.Error(), "deleted at revision") {
		t.Fatalf("stale writer after a delete: %v", err)
	}
	// Unrelated concurrent changes are not conflicts.
	unrelated := store.Change{Put: resource.Set{{Kind: resource.Clusters, Name: "other"}: &config.Cluster{Name: "other", Endpoints: []config.Endpoint{{Address: "127.0.0.1:3"}}}}, ExpectedRevision: snap.Revision}
	if _, err := s.Apply(ctx, unrelated); err != nil {
		t.Fatalf("unrelated change from an older revision: %v", err)
	}
}

func TestConcurrentChangesAllLand(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	apply(t, s, base())
	const n = 12
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("c%d", i)
			_, err := s.Apply(ctx, store.Change{Put: resource.Set{{Kind: resource.Clusters, Name: name}: &config.Cluster{Name: name, Endpoints: []config.Endpoint{{Address: fmt.Sprintf("127.0.0.1:%d", 10000+i)}}}}})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.History(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != n+1 {
		t.Fatalf("%d history entries, want %d", len(h), n+1)
	}
	for i, e := range h {
		if e.Seq != int64(n+1-i) {
			t.Fatalf("history entry %d has seq %d", i, e.Seq)
		}
	}
}

func TestDeleteReferenced(t *testing.T) {
	s := newStore(t)
	apply(t, s, base())
	_, err := s.Apply(context.Background(), store.Change{Delete: []resource.Ref{{Kind: resource.Clusters, Name: "api"}}})
	var re *store.ReferencedError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want a ReferencedError", err)
	}
	if re.Refs[0].Resource != "clusters/api" || re.Refs[0].By[0] != "virtual_hosts/web routes[0].cluster" {
		t.Fatalf("refs = %+v", re.Refs)
	}
	_, err = s.Apply(context.Background(), store.Change{Delete: []resource.Ref{{Kind: resource.Clusters, Name: "nope"}}})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting a missing cluster: %v", err)
	}
}

func TestRollback(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	first := apply(t, s, base())
	want, _ := s.Snapshot(ctx)

	c := base()
	c.Clusters[0].Endpoints[0].Address = "127.0.0.1:9999"
	c.Clusters = append(c.Clusters, config.Cluster{Name: "new", Endpoints: []config.Endpoint{{Address: "127.0.0.1:7"}}})
	c.VirtualHosts[0].Routes = append(c.VirtualHosts[0].Routes[:1], config.Route{Cluster: "new"})
	apply(t, s, c)
	if _, err := s.Apply(ctx, store.Change{Delete: []resource.Ref{{Kind: resource.Clusters, Name: "static"}}}); err != nil {
		t.Fatal(err)
	}

	res, err := s.Rollback(ctx, first.Revision, store.Change{Author: "test"})
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	got, _ := s.Snapshot(ctx)
	if len(got.Raw) != len(want.Raw) {
		t.Fatalf("after rollback %d resources, want %d", len(got.Raw), len(want.Raw))
	}
	for r, b := range want.Raw {
		if !bytes.Equal(got.Raw[r], b) {
			t.Errorf("%s = %s, want %s", r, got.Raw[r], b)
		}
	}
	h, _ := s.History(ctx, 1)
	if h[0].Revision != res.Revision || h[0].RollbackTo != first.Revision || h[0].Action != "rollback" {
		t.Fatalf("history head = %+v", h[0])
	}
	// Rolling back the rollback restores the later state.
	h, _ = s.History(ctx, 2)
	if _, err := s.Rollback(ctx, h[1].Revision, store.Change{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, resource.Ref{Kind: resource.Clusters, Name: "new"}); err != nil {
		t.Fatalf("undoing the rollback: %v", err)
	}
}

// TestRollbackUnknownRevision: a revision at which no change was made,
// past the latest or between two, is not found and changes nothing.
func TestRollbackUnknownRevision(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	first := apply(t, s, base())
	c := base()
	c.Clusters[0].Endpoints[0].Address = "127.0.0.1:9999"
	second := apply(t, s, c)
	// A write outside the configuration moves etcd's revision between
	// changes.
	if _, err := s.PutBlob(ctx, []byte("\x00asm\x01\x00\x00\x00")); err != nil {
		t.Fatal(err)
	}
	third := apply(t, s, base())
	if third.Revision <= second.Revision+1 {
		t.Fatalf("no revision between the changes at %d and %d", second.Revision, third.Revision)
	}
	for _, rev := range []int64{999999, third.Revision + 1, second.Revision + 1, first.Revision - 1} {
		_, err := s.Rollback(ctx, rev, store.Change{})
		if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), fmt.Sprintf("revision %d", rev)) {
			t.Errorf("rollback to %d: %v, want not found naming it", rev, err)
		}
	}
	h, _ := s.History(ctx, 0)
	if len(h) != 3 {
		t.Fatalf("%d changes after refused rollbacks, want 3", len(h))
	}
	// A dry run and a change that changes nothing report the latest
	// change's revision, the one the history shows.
	res, err := s.Apply(ctx, store.Change{Put: resource.Split(base()), DryRun: true})
	if err != nil || res.Revision != third.Revision {
		t.Errorf("dry run: %+v %v, want revision %d", res, err, third.Revision)
	}
	res, err = s.Rollback(ctx, third.Revision, store.Change{})
	if err != nil || res.Revision != third.Revision || len(res.Ops) != 0 {
		t.Errorf("rollback to the latest change: %+v %v, want unchanged at %d", res, err, third.Revision)
	}
}

func TestRollbackPastPrunedHistory(t *testing.T) {
	s := store.New(etcdtest.Client(t), etcdtest.Prefix(t), store.WithHistoryLimit(2))
	ctx := context.Background()
	first := apply(t, s, base())
	for i := range 3 {
		c := base()
		c.Clusters[0].Endpoints[0].Address = fmt.Sprintf("127.0.0.1:%d", 9100+i)
		apply(t, s, c)
	}
	h, _ := s.History(ctx, 0)
	if len(h) != 2 {
		t.Fatalf("%d entries kept, want 2", len(h))
	}
	_, err := s.Rollback(ctx, first.Revision, store.Change{})
	var ve *store.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(ve.Error(), "no longer reaches back") {
		t.Fatalf("rollback past the kept history: %v", err)
	}
}

func TestBlobs(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	data := make([]byte, 2*store.ChunkSize+123)
	rand.Read(data)
	meta, err := s.PutBlob(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Chunks != 3 || meta.Size != int64(len(data)) {
		t.Fatalf("meta = %+v", meta)
	}
	got, err := s.Blob(ctx, meta.SHA256)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob read back: %v", err)
	}

	// A plugin that names a blob needs it stored.
	cfg := base()
	cfg.Plugins = []config.Plugin{{Name: "authz", SHA256: strings.Repeat("ab", 32)}}
	cfg.VirtualHosts[0].Filters = []config.FilterRef{{Plugin: "authz"}}
	_, err = s.Apply(ctx, store.Change{Put: resource.Split(cfg)})
	var ve *store.ValidationError
	if !errors.As(err, &ve) || ve.Errors[0].Resource != "plugins/authz" || ve.Errors[0].Path != "sha256" {
		t.Fatalf("plugin without its blob: %v", err)
	}
	cfg.Plugins[0].SHA256 = meta.SHA256
	apply(t, s, cfg)

	// A corrupted chunk is detected.
	if _, err := s.Client().Put(ctx, s.Keys().BlobChunk(meta.SHA256, 1), strings.Repeat("x", store.ChunkSize)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Blob(ctx, meta.SHA256); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("corrupt blob: %v", err)
	}
}

func TestInvalidStoredValue(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	apply(t, s, base())
	bad := resource.Ref{Kind: resource.Clusters, Name: "evil"}
	if _, err := s.Client().Put(ctx, s.Keys().Resource(bad), `{"name":"evil","endpoints":[{"address":"x"}],"surprise":1}`); err != nil {
		t.Fatal(err)
	}
	c := base().Clusters[1]
	c.Endpoints[0].Address = "127.0.0.1:9300"
	_, err := s.Apply(ctx, store.Change{Put: resource.Set{{Kind: resource.Clusters, Name: "static"}: &c}})
	var ve *store.ValidationError
	if !errors.As(err, &ve) || ve.Errors[0].Resource != "clusters/evil" {
		t.Fatalf("change beside an invalid stored value: %v", err)
	}
	if _, err := s.Apply(ctx, store.Change{Delete: []resource.Ref{bad}}); err != nil {
		t.Fatalf("deleting the invalid value: %v", err)
	}
	if _, err := s.Apply(ctx, store.Change{Put: resource.Set{{Kind: resource.Clusters, Name: "static"}: &c}}); err != nil {
		t.Fatal(err)
	}
}

// TestUnreadableBookkeeping writes garbage into the head and a history
// entry with a real etcd client: reads and changes go on, the head is
// repaired from the history and the repair logged, and a rollback that
// would cross the unreadable entry is refused with a reason.
func TestUnreadableBookkeeping(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	core, logs := observer.New(zap.WarnLevel)
	s := store.New(cli, prefix, store.WithLogger(zap.New(core)))
	ctx := context.Background()
	first := apply(t, s, base())
	c := base().Clusters[1]
	c.Endpoints[0].Address = "127.0.0.1:9301"
	second, err := s.Apply(ctx, store.Change{Put: resource.Set{{Kind: resource.Clusters, Name: "static"}: &c}})
	if err != nil {
		t.Fatal(err)
	}

	for _, garbage := range []string{"\x00\xffnot json", `{"seq":"two"}`, `{"seq":-4}`, ""} {
		if _, err := cli.Put(ctx, s.Keys().Head(), garbage); err != nil {
			t.Fatal(err)
		}
		snap, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatalf("head %q: snapshot: %v", garbage, err)
		}
		if snap.Seq != second.Seq || len(snap.Resources) != 4 {
			t.Fatalf("head %q: seq %d and %d resources, want seq %d and 4", garbage, snap.Seq, len(snap.Resources), second.Seq)
		}
		if _, _, err := s.Get(ctx, resource.Ref{Kind: resource.Clusters, Name: "api"}); err != nil {
			t.Fatalf("head %q: get: %v", garbage, err)
		}
	}
	if n := logs.FilterMessageSnippet("repaired an unreadable bookkeeping key").Len(); n != 4 {
		t.Errorf("%d repairs logged for 4 damaged heads", n)
	}
	resp, err := cli.Get(ctx, s.Keys().Head())
	if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), fmt.Sprintf(`"seq":%d`, second.Seq)) {
		t.Fatalf("the head after repair: %v %v", resp, err)
	}

	// A change goes on from the repaired head.
	c.Endpoints[0].Address = "127.0.0.1:9302"
	third, err := s.Apply(ctx, store.Change{Put: resource.Set{{Kind: resource.Clusters, Name: "static"}: &c}})
	if err != nil || third.Seq != second.Seq+1 {
		t.Fatalf("change after the repair: %+v, %v", third, err)
	}

	// An unreadable history entry is listed as such; a rollback that
	// needs it is refused, one that does not goes through.
	if _, err := cli.Put(ctx, s.Keys().History(second.Seq), "{broken"); err != nil {
		t.Fatal(err)
	}
	hist, err := s.History(ctx, 0)
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	if len(hist) != 3 || hist[1].Action != store.ActionUnreadable || hist[1].Seq != second.Seq {
		t.Fatalf("history: %+v", hist)
	}
	_, err = s.Rollback(ctx, first.Revision, store.Change{})
	var ve *store.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "unreadable") {
		t.Fatalf("rollback across the unreadable entry: %v", err)
	}
	// Back to what the unreadable change made: only the change after it
	// is walked back.
	if _, err := s.Rollback(ctx, second.Revision, store.Change{}); err != nil {
		t.Fatalf("rollback to the unreadable entry's own result: %v", err)
	}
	got, _, err := s.Get(ctx, resource.Ref{Kind: resource.Clusters, Name: "static"})
	if err != nil || got.(*config.Cluster).Endpoints[0].Address != "127.0.0.1:9301" {
		t.Fatalf("after the rollback: %+v, %v", got, err)
	}
}

// TestResourceSizeCap refuses a change with a 10 MB value and treats one
// written around the control plane as invalid, with a clear error.
func TestResourceSizeCap(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	apply(t, s, base())
	big := base().VirtualHosts[0]
	big.Domains = []string{"*", strings.Repeat("a", 10<<20) + ".example"}
	_, err := s.Apply(ctx, store.Change{Put: resource.Set{{Kind: resource.VirtualHosts, Name: "web"}: &big}})
	var ve *store.ValidationError
	if !errors.As(err, &ve) || ve.Errors[0].Resource != "virtual_hosts/web" || !strings.Contains(err.Error(), "bytes a resource may take") {
		t.Fatalf("a 10 MB virtual host: %v", err)
	}

	huge := resource.Ref{Kind: resource.Clusters, Name: "huge"}
	value := `{"name":"huge","endpoints":[{"address":"127.0.0.1:1"}],"lb_policy":"` + strings.Repeat("x", store.MaxResourceBytes) + `"}`
	if _, err := s.Client().Put(ctx, s.Keys().Resource(huge), value); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Invalid[huge]; err == nil || !strings.Contains(err.Error(), "bytes a resource may take") {
		t.Fatalf("a value over the cap in etcd: %v", err)
	}
	if _, _, err := s.Get(ctx, huge); err == nil || !strings.Contains(err.Error(), "bytes a resource may take") {
		t.Fatalf("get of a value over the cap: %v", err)
	}
}
