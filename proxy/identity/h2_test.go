package identity_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/proxy/identity"
)

// TestMeshHTTP2Hop sends requests over an HTTP/2 cluster with mesh TLS
// (h2 by ALPN), and checks that a cluster expecting another identity is
// refused at the handshake: the request fails, nothing reaches the app.
func TestMeshHTTP2Hop(t *testing.T) {
	cp := startMeshCP(t, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := zap.NewNop()
	agents := map[string]*identity.Agent{"a": startAgent(t, ctx, cp, "a", log), "b": startAgent(t, ctx, cp, "b", log)}
	app := startApp(t)
	pb := startProxy(t, agents["b"], hopConfig(true, app, false, "", 0))
	h2 := strings.Replace(hopConfig(false, pb.Addr("in").String(), true, "spiffe://wasmgate.local/ns/shop/sa/b", 0),
		"  - name: next\n", "  - name: next\n    protocol: http2\n", 1)
	pa := startProxy(t, agents["a"], h2)
	for range 5 {
		resp, err := http.Get("http://" + pa.Addr("in").String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}

	wrong := startProxy(t, agents["a"], hopConfig(false, pb.Addr("in").String(), true, "spiffe://wasmgate.local/ns/shop/sa/payments", 0))
	resp, err := http.Get("http://" + wrong.Addr("in").String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 5 {
		t.Fatalf("a hop to an unexpected identity answered %d", resp.StatusCode)
	}
}
