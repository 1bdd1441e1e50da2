package proxy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/internal/prototest"
)

// wsEcho is a WebSocket upstream that echoes every message and refuses
// upgrades on /forbidden.
func wsEcho(t *testing.T) string {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/forbidden" {
			http.Error(w, "no websockets here", http.StatusForbidden)
			return
		}
		u := websocket.Upgrader{}
		c, err := u.Upgrade(w, r, http.Header{"X-Upstream-Saw-Proto": {r.Header.Get("X-Forwarded-Proto")}})
		if err != nil {
			return
		}
		defer c.Close()
		for {
			kind, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(kind, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(up.Close)
	return up.Listener.Addr().String()
}

const wsConfig = `
admin: {address: "off"}
listeners:
- name: plain
  address: "127.0.0.1:{{port}}"
  idle_timeout: {{idle}}
- name: tls
  address: "127.0.0.1:0"
  tls:
    certificates: [{cert_file: "{{cert}}", key_file: "{{key}}"}]
clusters:
- name: ws
  endpoints: [{address: "{{ws}}"}]
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - cluster: ws
    request_headers: {set: [{name: x-generation, value: "{{gen}}"}]}
`

func TestWebSocket(t *testing.T) {
	p := prototest.NewPKI(t)
	vars := map[string]string{"port": "0", "idle": "60s", "cert": p.CertFile, "key": p.KeyFile, "ws": wsEcho(t), "gen": "1"}
	render := func() *config.Config {
		y := wsConfig
		for k, v := range vars {
			y = strings.ReplaceAll(y, "{{"+k+"}}", v)
		}
		cfg, err := config.Parse([]byte(y), "ws.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	srv := proxy.NewServer(proxy.Options{})
	if err := srv.Apply(context.Background(), render(), ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	plain := srv.Addr("plain").String()
	vars["port"] = strings.Split(plain, ":")[1]

	echoes := func(t *testing.T, c *websocket.Conn, n int) {
		t.Helper()
		for i := range n {
			msg := fmt.Sprintf("message %d %s", i, strings.Repeat("x", i*1000))
			if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, got, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != msg {
				t.Fatalf("echo %d: %d bytes, want %d", i, len(got), len(msg))
			}
		}
	}

	t.Run("relay", func(t *testing.T) {
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+plain+"/chat", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if resp.StatusCode != 101 || resp.Header.Get("X-Upstream-Saw-Proto") != "http" {
			t.Errorf("status %d headers %v", resp.StatusCode, resp.Header)
		}
		echoes(t, c, 20)
	})

	t.Run("wss", func(t *testing.T) {
		d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: p.CA.Pool(), ServerName: "proxy.test"}}
		c, resp, err := d.Dial("wss://"+srv.Addr("tls").String()+"/chat", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if resp.Header.Get("X-Upstream-Saw-Proto") != "https" {
			t.Errorf("upstream saw X-Forwarded-Proto %q", resp.Header.Get("X-Upstream-Saw-Proto"))
		}
		echoes(t, c, 5)
	})

	t.Run("refused upgrade", func(t *testing.T) {
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+plain+"/forbidden", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("err %v resp %v, want the upstream's 403", err, resp)
		}
	})

	t.Run("survives reloads", func(t *testing.T) {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+plain+"/long", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoes(t, c, 3)
		// A route change keeps the listener; a listener change replaces
		// it beside the old one. Neither ends the relay.
		vars["gen"] = "2"
		if err := srv.Apply(context.Background(), render(), ""); err != nil {
			t.Fatal(err)
		}
		echoes(t, c, 3)
		vars["idle"] = "61s"
		if err := srv.Apply(context.Background(), render(), ""); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the old listener drains
		echoes(t, c, 3)
		// New connections reach the new listener.
		c2, _, err := websocket.DefaultDialer.Dial("ws://"+plain+"/new", nil)
		if err != nil {
			t.Fatal(err)
		}
		echoes(t, c2, 3)
		c2.Close()
	})

	t.Run("idle timeout", func(t *testing.T) {
		old := proxy.WebSocketIdleTimeout
		proxy.WebSocketIdleTimeout = 300 * time.Millisecond
		defer func() { proxy.WebSocketIdleTimeout = old }()
		c, _, err := websocket.DefaultDialer.Dial("ws://"+plain+"/idle", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Traffic keeps it open past the timeout...
		for range 5 {
			echoes(t, c, 1)
			time.Sleep(100 * time.Millisecond)
		}
		// ...silence closes it.
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		start := time.Now()
		if _, _, err := c.ReadMessage(); err == nil {
			t.Fatal("read a message from an idle relay")
		} else if strings.Contains(err.Error(), "timeout") {
			t.Fatalf("the relay was not closed after %v of silence", time.Since(start))
		}
	})
}
