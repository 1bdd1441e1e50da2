package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestUpMesh: `up --mesh` prints an allowed call through two sidecars, a
// denied one, and the ctl command that changes the policy. The sidecars'
// addresses it prints are the ones their sockets were bound at (port 0),
// served while it runs.
func TestUpMesh(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	errc := make(chan error, 1)
	dir := t.TempDir()
	go func() { errc <- runUpMesh(ctx, &out, dir, "127.0.0.1:0", zap.NewNop()) }()
	deadline := time.After(60 * time.Second)
	for !strings.Contains(out.String(), "mesh check") {
		select {
		case err := <-errc:
			t.Fatalf("up --mesh ended: %v\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("up --mesh printed no banner in 60 s:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	printed := regexp.MustCompile(`(?m)^  (\S+) +app \S+  inbound (\S+) \(mTLS\)  outbound (\S+)  spiffe://`).FindAllStringSubmatch(out.String(), -1)
	if len(printed) != 3 {
		t.Errorf("want 3 sidecars in the banner, got %d:\n%s", len(printed), out.String())
	}
	for _, m := range printed {
		for _, addr := range m[2:] {
			if _, port, _ := net.SplitHostPort(addr); port == "0" || port == "" {
				t.Errorf("%s: printed %q, not a bound address", m[1], addr)
				continue
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Errorf("%s: nothing serves %s: %v", m[1], addr, err)
				continue
			}
			c.Close()
		}
	}
	// The denied call is a decision record in the printed records file.
	records := filepath.Join(dir, "mesh", "records.log")
	if !strings.Contains(out.String(), records) {
		t.Errorf("the banner does not name the records file %s", records)
	}
	denied := regexp.MustCompile(`"kind":"decision".*"verdict":"deny".*"source_identity":"spiffe://wasmgate.local/ns/default/sa/web"`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(records); denied.Match(b) {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(records)
			t.Fatalf("no record of web's denied call in %s:\n%s", records, b)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"200 web -> orders -> payments (called by spiffe://wasmgate.local/ns/default/sa/orders)",
		"403 web -> RBAC: access denied",
		"mesh apply -f ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the banner lacks %q:\n%s", want, out.String())
		}
	}
}
