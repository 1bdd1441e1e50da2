package loadgen

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// startGoAwayH2C serves h2c connections that answer the first request with
// a GOAWAY of code (the request's stream included, so the client may not
// retry it elsewhere), then close.
func startGoAwayH2C(t *testing.T, code http2.ErrCode) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go goAwayConn(c.(*net.TCPConn), code)
		}
	}()
	return "http://" + ln.Addr().String()
}

func goAwayConn(c *net.TCPConn, code http2.ErrCode) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			_ = fr.WriteGoAway(f.StreamID, code, []byte("going away"))
			// Half-close and read to the client's end, so that no unread
			// byte turns the close into a reset that could drop the GOAWAY.
			_ = c.CloseWrite()
			_, _ = io.Copy(io.Discard, c)
			return
		}
	}
}

// TestH2GoAwayIsReset sends requests through the HTTP/2 transport of a run
// to servers that go away under them, and checks that the error names the
// GOAWAY and is counted as a reset.
func TestH2GoAwayIsReset(t *testing.T) {
	tests := []struct {
		name string
		code http2.ErrCode
	}{
		{"no error", http2.ErrCodeNo},
		{"internal error", http2.ErrCodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Protocol: HTTP2, Targets: []Target{{URL: startGoAwayH2C(t, tt.code) + "/"}}, Requests: 1}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			r, err := newRunner(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			g := newH2Group(r, newStats(1, false))
			defer g.close()
			c := newH2Client(r, nil, g)
			ctx := context.Background()
			if err := c.connect(ctx); err != nil {
				t.Fatalf("connect: %v", err)
			}
			_, err = c.do(ctx, r.targets[0], time.Now().Add(5*time.Second))
			if err == nil || !strings.Contains(err.Error(), "GOAWAY") {
				t.Fatalf("err = %v, want one that names the GOAWAY", err)
			}
			if k := classify(err); k != ErrReset {
				t.Fatalf("classify(%v) = %v, want %v", err, k, ErrReset)
			}
		})
	}
}
