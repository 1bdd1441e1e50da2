package sidecar_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// TestSidecarServiceEntries: web's sidecar keeps registry_only, and a
// service entry of its namespace lets one host outside the mesh through:
// an HTTP call to it is passed on, a call to any other host outside still
// gets 502; deleted, the entry lets nothing through any more. An entry
// that originates TLS sends the app's plain call to an HTTPS server,
// checked with the entry's root.
func TestSidecarServiceEntries(t *testing.T) {
	m := startProcessMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	outsidePort := appPort(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "outside") })
	webOut := testaddr.Free(t)
	m.start(t, "web", port(t, testaddr.Free(t)), webOut)

	// "localhost" is the host outside; 127.0.0.1 names the same server
	// but no entry.
	allowed, other := fmt.Sprintf("localhost:%d", outsidePort), fmt.Sprintf("127.0.0.1:%d", outsidePort)
	expect := func(host, want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got, err := get(webOut, host, "/")
			if err == nil && strings.HasPrefix(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("a call to %s: %q %v, want %q\n%s", host, got, err, want, m.sidecars.output())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	expect(allowed, "502 ")
	entry := resource.Ref{Kind: resource.ServiceEntries, Name: "local-api"}
	if _, err := m.admin.Put(ctx, entry, []byte(`{"name": "local-api", "namespace": "default", "hosts": ["localhost"]}`), api.Options{}); err != nil {
		t.Fatal(err)
	}
	expect(allowed, "200 outside")
	expect(other, "502 ")
	if _, err := m.admin.Delete(ctx, entry, api.Options{}); err != nil {
		t.Fatal(err)
	}
	expect(allowed, "502 ")

	// TLS origination: the app's plain call to localhost leaves over TLS
	// to an HTTPS server, whose certificate is checked with the entry's
	// root; without it, the system's roots refuse the server.
	ca, caKey := newCert(t, nil, nil, "outside-root")
	leaf, leafKey := newCert(t, ca, caKey, "localhost")
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls %s %s", r.TLS.ServerName, r.Host)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: leafKey}}}}
	go tsrv.ServeTLS(tl, "", "")
	t.Cleanup(func() { tsrv.Close() })
	originate := func(roots string) {
		t.Helper()
		doc, _ := json.Marshal(map[string]any{"name": "local-api", "namespace": "default", "hosts": []string{"localhost"},
			"tls_origination": map[string]any{"port": 80, "target_port": port(t, tl.Addr().String()), "ca_certificates": roots}})
		if _, err := m.admin.Put(ctx, entry, doc, api.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	originate(string(pemBlock("CERTIFICATE", ca.Raw)))
	expect("localhost", "200 tls localhost localhost")
	originate("")
	expect("localhost", "502 ")
}
