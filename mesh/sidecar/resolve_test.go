package sidecar

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
)

// TestResolveTCPNames: the names of the TCP services an app calls are
// looked up as the app would look them up, and the addresses found map
// to their services, except loopback and an address two services share.
func TestResolveTCPNames(t *testing.T) {
	if got := hostNames("db.default", "default"); !slices.Equal(got, []string{"db", "db.default", "db.default.svc"}) {
		t.Fatalf("hostNames in the same namespace: %q", got)
	}
	if got := hostNames("cache.shop", "default"); !slices.Equal(got, []string{"cache.shop", "cache.shop.svc"}) {
		t.Fatalf("hostNames in another namespace: %q", got)
	}
	s := Settings{Service: "web", Namespace: "default", TCPCalls: []TCPCall{{Service: "db"}, {Service: "cache.shop"}, {Service: "queue"}},
		Calls: []string{"orders", "search"}}
	dns := map[string][]string{
		"db":             {"10.96.0.10"},
		"db.default.svc": {"10.96.0.10", "::ffff:10.96.0.11"},
		"cache.shop":     {"10.96.0.20", "127.0.0.1"},
		"queue":          {"10.96.0.99"},
		"queue.default":  {"10.96.0.20"}, // cache's too: ambiguous
		"orders":         {"10.96.0.30"},
		"search":         {"10.96.0.31", "10.96.0.99"}, // queue's too: ambiguous
	}
	var (
		mu    sync.Mutex
		asked []string
	)
	tcp := &TCP{s: s, lookup: func(_ context.Context, host string) ([]netip.Addr, error) {
		mu.Lock()
		asked = append(asked, host)
		mu.Unlock()
		var out []netip.Addr
		for _, a := range dns[host] {
			out = append(out, netip.MustParseAddr(a))
		}
		if out == nil {
			return nil, errors.New("no such host")
		}
		return out, nil
	}}
	got, http := tcp.resolve(context.Background())
	want := map[netip.Addr]string{
		netip.MustParseAddr("10.96.0.10"): "db.default",
		netip.MustParseAddr("10.96.0.11"): "db.default",
	}
	if len(http) != 2 || !http[netip.MustParseAddr("10.96.0.30")] || !http[netip.MustParseAddr("10.96.0.31")] {
		t.Fatalf("HTTP services' addresses %v (asked %q)", http, asked)
	}
	if len(got) != len(want) {
		t.Fatalf("resolved %v, want %v (asked %q)", got, want, asked)
	}
	for ip, name := range want {
		if got[ip] != name {
			t.Fatalf("resolved %v, want %v (asked %q)", got, want, asked)
		}
	}
}
