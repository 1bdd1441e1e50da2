package discovery_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/internal/etcdtest"
)

// TestHTTPStream: a sidecar follows the hub over HTTP, gets live changes,
// survives the control plane going away and coming back (on the same
// address), and a refused interest is an error, not a retry loop.
func TestHTTPStream(t *testing.T) {
	cli := etcdtest.Client(t)
	prefix := etcdtest.Prefix(t)
	register(t, cli, prefix, "orders.shop", "10.0.0.1:15006")
	h := startHub(t, cli, prefix)
	handler := &discovery.Handler{Hub: h, Heartbeat: 50 * time.Millisecond, Authorize: func(r *http.Request, in discovery.Interest) error {
		if r.Header.Get("Authorization") != "Bearer sidecar" {
			return errors.New("not a sidecar")
		}
		return nil
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	addr := l.Addr().String()

	c := &discovery.Client{URL: srv.URL, Header: http.Header{"Authorization": {"Bearer sidecar"}}}
	s := c.Watch(discovery.Interest{Services: []string{"orders.shop"}, Namespace: "shop", Service: "web"})
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u, err := s.Next(ctx)
	if err != nil || describe(u) != "orders.shop=[10.0.0.1:15006] policies=[]" {
		t.Fatalf("first update: %s, %v", describe(u), err)
	}
	register(t, cli, prefix, "orders.shop", "10.0.0.2:15006")
	if u, err := s.Next(ctx); err != nil || describe(u) != "orders.shop=[10.0.0.1:15006,10.0.0.2:15006]" {
		t.Fatalf("after a registration: %s, %v", describe(u), err)
	}

	// The server goes away; a change happens; it comes back.
	srv.CloseClientConnections()
	srv.Close()
	register(t, cli, prefix, "orders.shop", "10.0.0.3:15006")
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv2 := &http.Server{Handler: handler}
	go srv2.Serve(l2)
	defer srv2.Close()
	// The snapshot sent on reconnection may come before the hub saw the
	// registration made while the server was away (the hub follows etcd
	// by a watch): then it holds the two endpoints known before, and an
	// update with the third follows.
	for {
		u, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("after reconnecting: %v", err)
		}
		d := describe(u)
		if d == "orders.shop=[10.0.0.1:15006,10.0.0.2:15006,10.0.0.3:15006] policies=[]" ||
			d == "orders.shop=[10.0.0.1:15006,10.0.0.2:15006,10.0.0.3:15006]" {
			break
		}
		if d != "orders.shop=[10.0.0.1:15006,10.0.0.2:15006] policies=[]" {
			t.Fatalf("after reconnecting: %s", d)
		}
	}

	// Heartbeats keep an idle stream open without updates.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if u, err := s.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("an idle stream returned %s, %v", describe(u), err)
	}

	var refused *discovery.RefusedError
	bad := (&discovery.Client{URL: "http://" + addr}).Watch(discovery.Interest{Services: []string{"orders.shop"}})
	if _, err := bad.Next(ctx); !errors.As(err, &refused) || refused.Status != http.StatusForbidden {
		t.Fatalf("an unauthorized watch: %v", err)
	}
	empty := c.Watch(discovery.Interest{})
	if _, err := empty.Next(ctx); !errors.As(err, &refused) || refused.Status != http.StatusBadRequest {
		t.Fatalf("an empty interest: %v", err)
	}
}
