package sidecar_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	// The server asks for a client certificate, and names the one it got:
	// its URI (a SPIFFE ID) or its common name.
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(ca)
	clientCAs.AppendCertsFromPEM(m.roots)
	tsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := "none"
		if certs := r.TLS.PeerCertificates; len(certs) > 0 {
			client = certs[0].Subject.CommonName
			if len(certs[0].URIs) > 0 {
				client = certs[0].URIs[0].String()
			}
		}
		fmt.Fprintf(w, "tls %s %s client %s", r.TLS.ServerName, r.Host, client)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: leafKey}},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientCAs}}
	go tsrv.ServeTLS(tl, "", "")
	t.Cleanup(func() { tsrv.Close() })
	originate := func(roots string, way ...string) {
		t.Helper()
		o := map[string]any{"port": 80, "target_port": port(t, tl.Addr().String()), "ca_certificates": roots}
		for i := 0; i+1 < len(way); i += 2 {
			o[way[i]] = way[i+1]
		}
		doc, _ := json.Marshal(map[string]any{"name": "local-api", "namespace": "default", "hosts": []string{"localhost"}, "tls_origination": o})
		if _, err := m.admin.Put(ctx, entry, doc, api.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	caPEM := string(pemBlock("CERTIFICATE", ca.Raw))
	originate(caPEM)
	expect("localhost", "200 tls localhost localhost client none")
	originate("")
	expect("localhost", "502 ")
	// Mode workload: the sidecar's own certificate, for a server that
	// trusts the mesh's roots (Istio's ISTIO_MUTUAL).
	originate(caPEM, "mode", "workload")
	expect("localhost", "200 tls localhost localhost client spiffe://wasmgate.local/ns/default/sa/web")
	// Mode mutual: a certificate and key from files on the sidecar's host,
	// read at each new connection (Istio's MUTUAL).
	client, clientKey := newCert(t, ca, caKey, "web-client")
	der, err := x509.MarshalECPrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(m.dir, "client.pem"), filepath.Join(m.dir, "client.key")
	if err := os.WriteFile(certFile, pemBlock("CERTIFICATE", client.Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pemBlock("EC PRIVATE KEY", der), 0o600); err != nil {
		t.Fatal(err)
	}
	originate(caPEM, "mode", "mutual", "certificate_file", certFile, "private_key_file", keyFile)
	expect("localhost", "200 tls localhost localhost client web-client")
	// Files that are not there: the call fails, and says so in the log.
	originate(caPEM, "mode", "mutual", "certificate_file", certFile+".gone", "private_key_file", keyFile)
	expect("localhost", "502 ")
	waitLog := time.Now().Add(5 * time.Second)
	for !strings.Contains(m.sidecars.output(), "the client certificate of TLS origination") {
		if time.Now().After(waitLog) {
			t.Fatalf("no log of the missing client certificate:\n%s", m.sidecars.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
