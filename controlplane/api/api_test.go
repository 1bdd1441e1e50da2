package api_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

const (
	adminSecret = "admin-secret-0123456789"
	readSecret  = "read-secret-0123456789"
)

func newAPI(t *testing.T) (admin, reader *api.Client) {
	t.Helper()
	st := store.New(etcdtest.Client(t), etcdtest.Prefix(t))
	h := api.NewHandler(st, []api.Token{
		{Name: "alice", Role: api.RoleAdmin, Secret: adminSecret},
		{Name: "bob", Role: api.RoleRead, Secret: readSecret},
	}, nil)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &api.Client{Server: srv.URL, Token: adminSecret}, &api.Client{Server: srv.URL, Token: readSecret}
}

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
      - cluster: static
clusters:
  - name: api
    endpoints: [{address: 127.0.0.1:9001}]
  - name: static
    endpoints: [{address: 127.0.0.1:9002}]
`

func apiError(t *testing.T, err error, status int) *api.Error {
	t.Helper()
	var e *api.Error
	if !errors.As(err, &e) || e.Status != status {
		t.Fatalf("err = %v, want HTTP %d", err, status)
	}
	return e
}

func TestAuth(t *testing.T) {
	admin, reader := newAPI(t)
	ctx := context.Background()
	anon := &api.Client{Server: admin.Server}
	apiError(t, func() error { _, err := anon.Config(ctx); return err }(), http.StatusUnauthorized)
	wrong := &api.Client{Server: admin.Server, Token: "nope"}
	apiError(t, func() error { _, err := wrong.Config(ctx); return err }(), http.StatusUnauthorized)
	if _, err := reader.Config(ctx); err != nil {
		t.Fatalf("read token reading: %v", err)
	}
	e := apiError(t, func() error { _, err := reader.Apply(ctx, []byte(bundle), api.Options{}); return err }(), http.StatusForbidden)
	if !strings.Contains(e.Body.Message, "bob") {
		t.Fatalf("403 message = %q", e.Body.Message)
	}
	// A read token may validate.
	if _, err := reader.Apply(ctx, []byte(bundle), api.Options{DryRun: true}); err == nil {
		t.Fatal("dry run through /v1/apply with a read token was allowed")
	}
	var out api.ChangeResult
	if err := reader.Do(ctx, http.MethodPost, "/v1/validate", []byte(bundle), nil, &out); err != nil || !out.DryRun {
		t.Fatalf("validate with a read token: %v %+v", err, out)
	}
}

func TestResourceLifecycle(t *testing.T) {
	c, _ := newAPI(t)
	ctx := context.Background()
	res, err := c.Apply(ctx, []byte(bundle), api.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Ops) != 4 || res.Seq != 1 {
		t.Fatalf("apply = %+v", res)
	}
	ref := resource.Ref{Kind: resource.Clusters, Name: "api"}
	item, err := c.Get(ctx, ref)
	if err != nil || item.Revision != res.Revision {
		t.Fatalf("get = %+v, %v", item, err)
	}

	// Two writers from the same revision: the second gets 409.
	doc := []byte("endpoints: [{address: 127.0.0.1:9100}]\n")
	if _, err := c.Put(ctx, ref, doc, api.Options{IfMatch: item.Revision}); err != nil {
		t.Fatalf("first writer: %v", err)
	}
	_, err = c.Put(ctx, ref, []byte("endpoints: [{address: 127.0.0.1:9200}]\n"), api.Options{IfMatch: item.Revision})
	e := apiError(t, err, http.StatusConflict)
	if e.Body.Code != "conflict" || e.Body.Conflicts[0].Resource != "clusters/api" {
		t.Fatalf("409 body = %+v", e.Body)
	}

	// An invalid change names the field.
	_, err = c.Put(ctx, resource.Ref{Kind: resource.VirtualHosts, Name: "web"},
		[]byte("domains: ['*']\nroutes:\n  - cluster: nowhere\n"), api.Options{})
	e = apiError(t, err, http.StatusUnprocessableEntity)
	if e.Body.Errors[0].Resource != "virtual_hosts/web" || e.Body.Errors[0].Path != "routes[0].cluster" {
		t.Fatalf("422 body = %+v", e.Body)
	}
	// An unknown field is refused with its line.
	_, err = c.Put(ctx, ref, []byte("endpoints: [{address: 127.0.0.1:1}]\nlb_polcy: random\n"), api.Options{})
	e = apiError(t, err, http.StatusUnprocessableEntity)
	if fe := e.Body.Errors[0]; fe.Line != 2 || fe.DocumentPath != "lb_polcy" || fe.Message != `unknown field (did you mean "lb_policy"?)` {
		t.Fatalf("unknown field: %+v", e.Body)
	}

	// Deleting a referenced cluster names the referrer.
	_, err = c.Delete(ctx, ref, api.Options{})
	e = apiError(t, err, http.StatusConflict)
	if e.Body.Code != "referenced" || e.Body.Referenced[0].By[0] != "virtual_hosts/web routes[0].cluster" {
		t.Fatalf("referenced body = %+v", e.Body)
	}
	_, err = c.Delete(ctx, resource.Ref{Kind: resource.Plugins, Name: "nope"}, api.Options{})
	apiError(t, err, http.StatusNotFound)
}

func TestBundleErrorsUseDocumentPaths(t *testing.T) {
	c, _ := newAPI(t)
	bad := strings.Replace(bundle, "127.0.0.1:9002", "no-port", 1)
	_, err := c.Apply(context.Background(), []byte(bad), api.Options{DryRun: true})
	e := apiError(t, err, http.StatusUnprocessableEntity)
	if got := e.Body.Errors[0].DocumentPath; got != "clusters[1].endpoints[0].address" {
		t.Fatalf("document path = %q (%+v)", got, e.Body.Errors)
	}
	_, err = c.Apply(context.Background(), []byte("admin: {address: 127.0.0.1:1}\n"+bundle), api.Options{})
	e = apiError(t, err, http.StatusUnprocessableEntity)
	if fe := e.Body.Errors[0]; fe.DocumentPath != "admin" || fe.Line != 1 {
		t.Fatalf("local field: %+v", e.Body)
	}
}

func TestYAMLAnswers(t *testing.T) {
	c, _ := newAPI(t)
	ctx := context.Background()
	if _, err := c.Apply(ctx, []byte(bundle), api.Options{}); err != nil {
		t.Fatal(err)
	}
	var out []byte
	if err := c.Do(ctx, http.MethodGet, "/v1/clusters/api", nil, http.Header{"Accept": {"application/yaml"}}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "value:\n  name: api\n") {
		t.Fatalf("YAML answer:\n%s", out)
	}
}

func TestRollbackAndHistory(t *testing.T) {
	c, _ := newAPI(t)
	ctx := context.Background()
	first, err := c.Apply(ctx, []byte(bundle), api.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(ctx, []byte(strings.Replace(bundle, "9001", "9555", 1)), api.Options{Message: "move api"}); err != nil {
		t.Fatal(err)
	}
	h, err := c.History(ctx, 10, false)
	if err != nil || len(h.Items) != 2 || h.Items[0].Author != "alice" || h.Items[0].Message != "move api" {
		t.Fatalf("history = %+v, %v", h, err)
	}
	if _, err := c.Rollback(ctx, api.RollbackRequest{Revision: first.Revision}); err != nil {
		t.Fatal(err)
	}
	item, _ := c.Get(ctx, resource.Ref{Kind: resource.Clusters, Name: "api"})
	if !strings.Contains(string(item.Value), "9001") {
		t.Fatalf("after rollback: %s", item.Value)
	}
}

func TestBlobsAndEndpoints(t *testing.T) {
	c, _ := newAPI(t)
	ctx := context.Background()
	wasm := append([]byte("\x00asm\x01\x00\x00\x00"), make([]byte, 1<<20)...)
	meta, err := c.PushBlob(ctx, wasm)
	if err != nil || meta.Chunks != 3 {
		t.Fatalf("push = %+v, %v", meta, err)
	}
	var back []byte
	if err := c.Do(ctx, http.MethodGet, "/v1/blobs/"+meta.SHA256, nil, nil, &back); err != nil || len(back) != len(wasm) {
		t.Fatalf("blob read back: %d bytes, %v", len(back), err)
	}
	ep, err := c.RegisterEndpoint(ctx, "api", "a1", api.EndpointRequest{Address: "127.0.0.1:7001"})
	if err != nil || ep.Lease == 0 {
		t.Fatalf("register = %+v, %v", ep, err)
	}
	again, err := c.RegisterEndpoint(ctx, "api", "a1", api.EndpointRequest{Address: "127.0.0.1:7001"})
	if err != nil || again.Lease != ep.Lease {
		t.Fatalf("renewal granted a new lease: %+v, %v", again, err)
	}
	_, err = c.RegisterEndpoint(ctx, "api", "a2", api.EndpointRequest{Address: "nope", TTL: 0})
	apiError(t, err, http.StatusUnprocessableEntity)
	list, err := c.Endpoints(ctx, "api")
	if err != nil || len(list.Items) != 1 || list.Items[0].TTL <= 0 {
		t.Fatalf("endpoints = %+v, %v", list, err)
	}
	if err := c.DeregisterEndpoint(ctx, "api", "a1"); err != nil {
		t.Fatal(err)
	}
	apiError(t, c.DeregisterEndpoint(ctx, "api", "a1"), http.StatusNotFound)
}

// TestBundleReportsEveryProblem: a bundle's decode errors do not hide the
// problems of what decoded, and every one is named by the document's
// name and line.
func TestBundleReportsEveryProblem(t *testing.T) {
	c, _ := newAPI(t)
	bad := strings.Replace(bundle, "cluster: static", "cluster: statik", 1) + "    idle_timout: 5s\n"
	_, err := c.Apply(context.Background(), []byte(bad), api.Options{Document: "b.yaml"})
	e := apiError(t, err, http.StatusUnprocessableEntity)
	var got []string
	for _, fe := range e.Body.Errors {
		got = append(got, fe.String())
	}
	want := []string{
		`b.yaml:11: virtual_hosts[0].routes[1].cluster: unknown cluster "statik"`,
		`b.yaml:17: clusters[1].idle_timout: unknown field (did you mean "idle_timeout"?)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if list, err := c.List(context.Background(), resource.Clusters); err != nil || len(list.Items) != 0 {
		t.Fatalf("a refused bundle wrote %+v (%v)", list, err)
	}
	// A resource's document is named too.
	_, err = c.Put(context.Background(), resource.Ref{Kind: resource.Clusters, Name: "api"}, []byte("endpoints: []\nlb_polcy: x\n"), api.Options{Document: "api.yaml"})
	e = apiError(t, err, http.StatusUnprocessableEntity)
	if got := e.Body.Errors[0].String(); got != `api.yaml:2: lb_polcy: unknown field (did you mean "lb_policy"?)` {
		t.Fatalf("put: %s", got)
	}
}
