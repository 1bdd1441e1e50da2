package sidecar_test

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/mesh/sidecar"
)

// TestStartLocalPortZero: an inbound and an outbound of port 0 are bound
// by the sockets that serve them, not picked free beforehand: Settings
// has the addresses the proxy's listeners (or a TCP app's relay) hold,
// and the inbound's is the one registered.
func TestStartLocalPortZero(t *testing.T) {
	m := startMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	roots, err := os.ReadFile(m.cp.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.admin.CreateToken(ctx, api.TokenRequest{Namespace: "default", ServiceAccount: "db"})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sidecar.StartLocal(ctx, sidecar.LocalOptions{
		Settings:     sidecar.Settings{Service: "db", AppPort: 1, Protocol: sidecar.ProtocolTCP, Inbound: "127.0.0.1:0", Outbound: "127.0.0.1:0"},
		ControlPlane: m.cp.APIURL(), Roots: roots, JoinToken: tok.Token, Etcd: m.cp.Client, TTL: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(time.Second)

	addr := func(a net.Addr) string {
		if a == nil {
			return "none"
		}
		return a.String()
	}
	for _, l := range []*sidecar.Local{m.sidecar["payments"], m.sidecar["orders"], m.sidecar["web"], db} {
		s := l.Settings
		t.Run(s.Service, func(t *testing.T) {
			inbound := addr(l.Server.Addr(sidecar.InboundListener))
			if s.Protocol == sidecar.ProtocolTCP {
				inbound = addr(l.TCP.InboundAddr())
			}
			if s.Inbound != inbound || s.Announce != inbound {
				t.Errorf("inbound %q, announce %q; the socket serving it is at %s", s.Inbound, s.Announce, inbound)
			}
			if outbound := addr(l.Server.Addr(sidecar.OutboundListener)); s.Outbound != outbound {
				t.Errorf("outbound %q; the socket serving it is at %s", s.Outbound, outbound)
			}
			for _, a := range []string{s.Inbound, s.Outbound} {
				if _, port, _ := net.SplitHostPort(a); port == "0" {
					t.Errorf("%q: the port is still 0", a)
				}
				c, err := net.Dial("tcp", a)
				if err != nil {
					t.Errorf("nothing serves %s: %v", a, err)
					continue
				}
				c.Close()
			}
			eps, err := registry.Endpoints(ctx, m.cp.Client, "", s.Name())
			if err != nil {
				t.Fatal(err)
			}
			if len(eps) != 1 || eps[0].Address != s.Inbound || eps[0].ID != sidecar.EndpointID(&s) {
				t.Errorf("registered %+v; want one endpoint at %s", eps, s.Inbound)
			}
		})
	}
}
