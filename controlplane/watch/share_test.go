package watch_test

import (
	"context"
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
	"github.com/wasmgate/wasmgate/controlplane/watch"
)

// TestUnchangedResourcesShared checks that a virtual host that did not
// change reaches Apply with the very routes of the configuration before,
// which is what lets the proxy reuse its compiled form without comparing.
func TestUnchangedResourcesShared(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	st := store.New(cli, prefix)
	cfg := base()
	cfg.VirtualHosts = append(cfg.VirtualHosts, config.VirtualHost{Name: "other", Domains: []string{"other.example"}, Routes: []config.Route{
		{Match: config.RouteMatch{Prefix: "/"}, Cluster: "api"},
	}})
	first, err := st.Apply(context.Background(), store.Change{Put: resource.Split(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	a := newApplied()
	startWatcher(t, watch.Options{Client: cli, Prefix: prefix, Apply: a.apply})
	before := a.until(t, "the first configuration", atRev(first.Revision)).cfg

	changed := cfg.VirtualHosts[0]
	changed.Routes = []config.Route{{Match: config.RouteMatch{Prefix: "/v2"}, Cluster: "api"}}
	res, err := st.Apply(context.Background(), store.Change{Put: resource.Set{{Kind: resource.VirtualHosts, Name: changed.Name}: &changed}})
	if err != nil {
		t.Fatal(err)
	}
	after := a.until(t, "the change", atRev(res.Revision)).cfg

	routes := func(c *config.Config, name string) []config.Route {
		for _, vh := range c.VirtualHosts {
			if vh.Name == name {
				return vh.Routes
			}
		}
		t.Fatalf("no virtual host %q", name)
		return nil
	}
	if &routes(before, "other")[0] != &routes(after, "other")[0] {
		t.Error("the unchanged virtual host was copied")
	}
	if got := routes(after, "web")[0].Match.Prefix; got != "/v2" {
		t.Errorf("the changed virtual host has prefix %q", got)
	}
	if routes(after, "other")[0].Name != "other-0" {
		t.Error("the shared routes are not normalized")
	}
}
