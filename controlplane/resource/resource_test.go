package resource_test

import (
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/resource"
)

func TestConfigRange(t *testing.T) {
	k := resource.NewKeys("/wasmgate/")
	begin, end := k.ConfigRange()
	in := func(key string) bool { return key >= begin && key < end }
	for _, key := range []string{
		k.Resource(resource.Ref{Kind: resource.Listeners, Name: "l"}),
		k.Resource(resource.Ref{Kind: resource.VirtualHosts, Name: "zzzz"}),
		k.Resource(resource.Ref{Kind: resource.Clusters, Name: "0"}),
		k.Resource(resource.Ref{Kind: resource.Plugins, Name: "p"}),
		k.Endpoint("c", "id"), k.Head(), k.History(1),
	} {
		if !in(key) {
			t.Errorf("%s is outside the watched range [%s, %s)", key, begin, end)
		}
	}
	for _, key := range []string{k.BlobChunk("ab", 0), k.BlobMeta("ff"), k.Proxy("node-1"), "/wasmgate/virtual_hosts0", "/wasmgatex/clusters/a"} {
		if in(key) {
			t.Errorf("%s is inside the watched range", key)
		}
	}
}

func TestKeysRoundTrip(t *testing.T) {
	k := resource.NewKeys("")
	for _, kind := range resource.Kinds {
		ref := resource.Ref{Kind: kind, Name: "a.b-c_1"}
		got, ok := k.ParseResource(k.Resource(ref))
		if !ok || got != ref {
			t.Errorf("ParseResource(%s) = %v, %v", k.Resource(ref), got, ok)
		}
	}
	for _, key := range []string{"/wasmgate/clusters/", "/wasmgate/clusters/a/b", "/wasmgate/head", "/other/clusters/a", "/wasmgate/routes/a"} {
		if _, ok := k.ParseResource(key); ok {
			t.Errorf("ParseResource(%q) accepted", key)
		}
	}
	c, id, ok := k.ParseEndpoint(k.Endpoint("api", "10.0.0.1:80"))
	if !ok || c != "api" || id != "10.0.0.1:80" {
		t.Errorf("ParseEndpoint = %q %q %v", c, id, ok)
	}
}

func TestDecodeIsStrict(t *testing.T) {
	ref := resource.Ref{Kind: resource.Clusters, Name: "api"}
	for _, tc := range []struct{ name, value string }{
		{"unknown field", `{"name":"api","endpoints":[],"extra":1}`},
		{"other name", `{"name":"web","endpoints":[]}`},
		{"not json", `name: api`},
		{"trailing", `{"name":"api"} {}`},
		{"wrong type", `{"name":"api","endpoints":"x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := resource.Decode(ref, []byte(tc.value)); err == nil {
				t.Fatalf("Decode(%s) accepted", tc.value)
			}
		})
	}
	v, err := resource.Decode(ref, []byte(`{"name":"api","endpoints":[{"address":"a:1"}],"connect_timeout":"2s"}`))
	if err != nil || v.(*config.Cluster).ConnectTimeout.D().Seconds() != 2 {
		t.Fatalf("Decode = %v, %v", v, err)
	}
}

func TestAssembleDoesNotShare(t *testing.T) {
	vh := &config.VirtualHost{Name: "web", Domains: []string{"EXAMPLE.com"}, Routes: []config.Route{{Cluster: "c"}}}
	s := resource.Set{{Kind: resource.VirtualHosts, Name: "web"}: vh}
	cfg, err := resource.Assemble(&config.Config{Node: config.Node{ID: "n1"}}, s)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Normalize()
	if vh.Domains[0] != "EXAMPLE.com" || vh.Routes[0].Name != "" {
		t.Fatal("normalizing the assembled configuration changed the set")
	}
	if cfg.Node.ID != "n1" || cfg.VirtualHosts[0].Domains[0] != "example.com" {
		t.Fatalf("assembled = %+v", cfg)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"name":"api","endpoints":[{"address":"a:1","weight":2}],"lb_policy":"maglev"}`))
	f.Add([]byte(`{"name":"api","hash_policy":{"header":"x"}}`))
	ref := resource.Ref{Kind: resource.Clusters, Name: "api"}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := resource.Decode(ref, data)
		if err != nil {
			return
		}
		b, err := resource.Encode(v)
		if err != nil {
			t.Fatalf("a decoded value does not encode: %v", err)
		}
		if _, err := resource.Decode(ref, b); err != nil {
			t.Fatalf("an encoded value does not decode: %v\n%s", err, b)
		}
	})
}
