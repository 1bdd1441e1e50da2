package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestValidate(t *testing.T) {
	ok := Config{Targets: []Target{{URL: "http://127.0.0.1:1/"}}, Duration: time.Second}
	tests := []struct {
		name   string
		mutate func(*Config)
		field  string // expected in the error; empty: valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no targets", func(c *Config) { c.Targets = nil }, "targets"},
		{"bad scheme", func(c *Config) { c.Targets[0].URL = "ftp://x/" }, "targets[0].url"},
		{"h3 over http", func(c *Config) { c.Protocol = HTTP3 }, "targets[0].url"},
		{"negative weight", func(c *Config) { c.Targets[0].Weight = -1 }, "targets[0].weight"},
		{"unknown protocol", func(c *Config) { c.Protocol = "spdy" }, "protocol"},
		{"bad header", func(c *Config) { c.Headers = []Header{{Key: "A B", Value: "x"}} }, "headers[0]"},
		{"streams on h1", func(c *Config) { c.Streams = 4 }, "streams"},
		{"no bound", func(c *Config) { c.Duration = 0 }, "duration"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			c.Targets = append([]Target(nil), ok.Targets...)
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.field != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.field)):
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.field)
			}
		})
	}
}

// pathCounter counts requests by path and checks the method, a header and
// the body sent.
type pathCounter struct {
	mu     sync.Mutex
	byPath map[string]int
	bad    atomic.Int64
}

func (p *pathCounter) handler(wantMethod, wantHeader, wantBody string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Method()) != wantMethod || string(ctx.Request.Header.Peek("X-Test")) != wantHeader ||
			string(ctx.PostBody()) != wantBody {
			p.bad.Add(1)
		}
		p.mu.Lock()
		p.byPath[string(ctx.Path())]++
		p.mu.Unlock()
		ctx.SetBodyString("ok")
	}
}

func TestRunProtocols(t *testing.T) {
	cert := newTestCert(t)
	h2tls := startH2TLS(t, cert, helloHandler, nil)
	mtls := startH2TLS(t, cert, helloHandler, cert.pool)
	h2cURL := startH2C(t, helloHandler)
	h3URL := startH3(t, cert, helloHandler)
	h1URL, _ := startFastHTTP(t, okHandler)
	caOnly, err := TLSFiles{CAFile: cert.certFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	withClient, err := TLSFiles{CAFile: cert.certFile, CertFile: cert.certFile, KeyFile: cert.keyFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	sniLocalhost, err := TLSFiles{CAFile: cert.certFile, ServerName: "localhost"}.Config()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		cfg  Config
	}{
		{"h1", Config{Targets: []Target{{URL: h1URL + "/"}}, Connections: 2}},
		{"h1 new connection per request", Config{Targets: []Target{{URL: h1URL + "/"}}, Connections: 2, NewConnPerRequest: true}},
		{"h1 over TLS", Config{Targets: []Target{{URL: h2tls + "/"}}, TLS: caOnly}},
		{"h1 over TLS insecure", Config{Targets: []Target{{URL: h2tls + "/"}}, TLS: &tls.Config{InsecureSkipVerify: true}}},
		{"h2 TLS", Config{Protocol: HTTP2, Targets: []Target{{URL: h2tls + "/"}}, Connections: 2, Streams: 4, TLS: caOnly}},
		{"h2 TLS with SNI", Config{Protocol: HTTP2, Targets: []Target{{URL: h2tls + "/"}}, TLS: sniLocalhost}},
		{"h2 client certificate", Config{Protocol: HTTP2, Targets: []Target{{URL: mtls + "/"}}, TLS: withClient}},
		{"h2 new connection per request", Config{Protocol: HTTP2, Targets: []Target{{URL: h2tls + "/"}}, TLS: caOnly, NewConnPerRequest: true}},
		{"h2c", Config{Protocol: HTTP2, Targets: []Target{{URL: h2cURL + "/"}}, Connections: 2, Streams: 2}},
		{"h3", Config{Protocol: HTTP3, Targets: []Target{{URL: h3URL + "/"}}, Connections: 2, Streams: 2, TLS: caOnly}},
		{"h3 open loop", Config{Protocol: HTTP3, Targets: []Target{{URL: h3URL + "/"}}, Rate: 500, TLS: caOnly}},
		{"h2 open loop", Config{Protocol: HTTP2, Targets: []Target{{URL: h2cURL + "/"}}, Rate: 500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Duration = 400 * time.Millisecond
			rep, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if rep.Responses < 10 || rep.Errors != 0 || rep.Status[200] != rep.Responses {
				t.Fatalf("responses %d, errors %v, status %v", rep.Responses, rep.ErrorKinds, rep.Status)
			}
			if rep.BytesIn == 0 || rep.BytesOut == 0 || rep.Latency.P50 <= 0 || rep.Latency.Max < rep.Latency.P99 {
				t.Fatalf("bytes %d/%d, latency %+v", rep.BytesIn, rep.BytesOut, rep.Latency)
			}
		})
	}
	t.Run("h2 fails verification without the CA", func(t *testing.T) {
		rep, err := Run(context.Background(), Config{Protocol: HTTP2, Targets: []Target{{URL: h2tls + "/"}}, Duration: time.Second})
		if err == nil || rep == nil || rep.ErrorKinds["tls"] == 0 {
			t.Fatalf("err %v, report %+v", err, rep)
		}
	})
}

func TestRunRequestShape(t *testing.T) {
	pc := &pathCounter{byPath: map[string]int{}}
	u, _ := startFastHTTP(t, pc.handler("PUT", "yes", "payload"))
	rep, err := Run(context.Background(), Config{
		Targets:     []Target{{URL: u + "/a", Weight: 3}, {URL: u + "/b?q=1"}},
		Method:      "PUT",
		Headers:     []Header{{Key: "X-Test", Value: "yes"}},
		Body:        []byte("payload"),
		Connections: 2,
		Requests:    400,
		Warmup:      100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Responses != 400 {
		t.Fatalf("responses = %d, want 400", rep.Responses)
	}
	if n := pc.bad.Load(); n != 0 {
		t.Fatalf("%d requests had the wrong method, header or body", n)
	}
	pc.mu.Lock()
	a, b := pc.byPath["/a"], pc.byPath["/b"]
	pc.mu.Unlock()
	if ratio := float64(a) / float64(b); ratio < 2.8 || ratio > 3.2 {
		t.Fatalf("/a %d, /b %d: ratio %.2f, want 3", a, b, ratio)
	}
}

func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	for _, p := range []Protocol{HTTP1, HTTP2} {
		t.Run(string(p), func(t *testing.T) {
			start := time.Now()
			rep, err := Run(context.Background(), Config{Protocol: p, Targets: []Target{{URL: "http://" + addr + "/"}}, Duration: 10 * time.Second})
			if !errors.Is(err, ErrTargetDown) || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("err = %v, want target down, refused", err)
			}
			if rep == nil || rep.ErrorKinds["refused"] == 0 || rep.Aborted == "" {
				t.Fatalf("report %+v", rep)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
}

// killableServer is a fasthttp server whose connections can all be cut.
type killableServer struct {
	mu    sync.Mutex
	conns []net.Conn
	ln    net.Listener
}

func (k *killableServer) Accept() (net.Conn, error) {
	c, err := k.ln.Accept()
	if err == nil {
		k.mu.Lock()
		k.conns = append(k.conns, c)
		k.mu.Unlock()
	}
	return c, err
}
func (k *killableServer) Close() error   { return k.ln.Close() }
func (k *killableServer) Addr() net.Addr { return k.ln.Addr() }

func (k *killableServer) kill() {
	_ = k.ln.Close()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		_ = c.Close()
	}
}

func TestTargetDiesMidRun(t *testing.T) {
	tests := []struct {
		name string
		rate float64
	}{
		{"closed loop", 0},
		{"open loop", 2000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			k := &killableServer{ln: ln}
			go func() { _ = fasthttp.Serve(k, okHandler) }()
			time.AfterFunc(500*time.Millisecond, k.kill)
			start := time.Now()
			rep, err := Run(context.Background(), Config{
				Targets:     []Target{{URL: "http://" + ln.Addr().String() + "/"}},
				Connections: 2,
				Rate:        tt.rate,
				Duration:    20 * time.Second,
				DownAfter:   time.Second,
			})
			elapsed := time.Since(start)
			if !errors.Is(err, ErrTargetDown) {
				t.Fatalf("err = %v, want target down", err)
			}
			if rep.Responses == 0 || rep.Errors == 0 || rep.ErrorKinds["refused"] == 0 || rep.Aborted == "" {
				t.Fatalf("partial report: responses %d, errors %v, aborted %q", rep.Responses, rep.ErrorKinds, rep.Aborted)
			}
			if elapsed > 3*time.Second {
				t.Fatalf("took %v to give up", elapsed)
			}
		})
	}
}

func TestRunEndsOnStalledTarget(t *testing.T) {
	u, _ := startFastHTTP(t, func(ctx *fasthttp.RequestCtx) { time.Sleep(10 * time.Second) })
	start := time.Now()
	rep, err := Run(context.Background(), Config{Targets: []Target{{URL: u + "/"}}, Duration: 300 * time.Millisecond, Grace: 200 * time.Millisecond})
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("run took %v, want about duration plus grace", d)
	}
	if err != nil || rep.Responses != 0 {
		t.Fatalf("err %v, responses %d", err, rep.Responses)
	}
}

func TestCanceled(t *testing.T) {
	u, _ := startFastHTTP(t, okHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	rep, err := Run(ctx, Config{Targets: []Target{{URL: u + "/"}}, Duration: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) || rep == nil || rep.Responses == 0 {
		t.Fatalf("err %v, report %v", err, rep)
	}
}

// TestOpenLoopSeesStall runs a target that stalls once for 500ms. The
// closed loop hides it behind one slow request; the open loop counts every
// request that fell due during the stall.
func TestOpenLoopSeesStall(t *testing.T) {
	tests := []struct {
		name       string
		rate       float64
		wantP99Min time.Duration
		wantP99Max time.Duration
	}{
		{"closed loop hides the stall", 0, 0, 100 * time.Millisecond},
		{"open loop shows the stall", 400, 200 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var once atomic.Bool
			start := time.Now()
			u, _ := startFastHTTP(t, func(ctx *fasthttp.RequestCtx) {
				if time.Since(start) > 500*time.Millisecond && once.CompareAndSwap(false, true) {
					time.Sleep(500 * time.Millisecond)
				}
				ctx.SetBodyString("ok")
			})
			rep, err := Run(context.Background(), Config{
				Targets: []Target{{URL: u + "/"}}, Connections: 1, Rate: tt.rate, Duration: 2 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Latency.Max < 450*time.Millisecond {
				t.Fatalf("max %v: the stall is missing", rep.Latency.Max)
			}
			if p := rep.Latency.P99; p < tt.wantP99Min || p > tt.wantP99Max {
				t.Fatalf("p99 = %v, want in [%v, %v]; latency %+v", p, tt.wantP99Min, tt.wantP99Max, rep.Latency)
			}
			if tt.rate > 0 {
				if got := rep.Throughput; got < 0.9*tt.rate || got > 1.1*tt.rate {
					t.Fatalf("throughput %.1f, want about %v", got, tt.rate)
				}
			}
		})
	}
}

func quickReport(t *testing.T) *Report {
	t.Helper()
	u, _ := startFastHTTP(t, okHandler)
	rep, err := Run(context.Background(), Config{Targets: []Target{{URL: u + "/"}}, Connections: 2, Duration: 1200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestJSONRoundTripAndCompare(t *testing.T) {
	rep := quickReport(t)
	path := filepath.Join(t.TempDir(), "a.json")
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Start.Equal(rep.Start) {
		t.Fatalf("start %v, want %v", got.Start, rep.Start)
	}
	got.Start, rep.Start = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, rep) {
		t.Fatalf("round trip changed the report:\n got %+v\nwant %+v", got, rep)
	}

	half := *rep
	half.Throughput /= 2
	half.Latency.P99 *= 2
	tests := []struct {
		metric string
		ratio  float64
		better string
	}{
		{"throughput", 0.5, "a"},
		{"latency p99", 2, "a"},
		{"latency p50", 1, ""},
	}
	rows := Compare(rep, &half)
	for _, tt := range tests {
		t.Run(tt.metric, func(t *testing.T) {
			for _, r := range rows {
				if r.Metric == tt.metric {
					if r.Ratio == nil || *r.Ratio != tt.ratio || r.Better != tt.better {
						t.Fatalf("%+v, want ratio %v better %q", r, tt.ratio, tt.better)
					}
					return
				}
			}
			t.Fatalf("no row %s", tt.metric)
		})
	}
	var out bytes.Buffer
	if err := WriteComparison(&out, "a.json", rep, "b.json", &half); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "0.500") {
		t.Fatalf("comparison lacks the throughput ratio:\n%s", out.String())
	}
}

func TestHTMLSelfContained(t *testing.T) {
	rep := quickReport(t)
	path := filepath.Join(t.TempDir(), "r.html")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteHTML(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{"<svg", "<polyline", "Latency by percentile", "Throughput over time", "99.9%"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, banned := range []string{"src=", "href=", "<link", "@import", "url(", "<script"} {
		if strings.Contains(page, banned) {
			t.Errorf("page refers outside itself: %q", banned)
		}
	}
}

func TestTextReport(t *testing.T) {
	rep := quickReport(t)
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p99.99", "200: ", "req/s", "Transfer"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestProgress(t *testing.T) {
	u, _ := startFastHTTP(t, okHandler)
	var calls []Progress
	var mu sync.Mutex
	_, err := Run(context.Background(), Config{
		Targets: []Target{{URL: u + "/"}}, Duration: 700 * time.Millisecond, ProgressInterval: 200 * time.Millisecond,
		Progress: func(p Progress) { mu.Lock(); calls = append(calls, p); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) < 2 || calls[len(calls)-1].Responses == 0 || calls[len(calls)-1].P50 == 0 {
		t.Fatalf("progress calls %+v", calls)
	}
}

func TestH2Body(t *testing.T) {
	var bad atomic.Int64
	u := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.ProtoMajor != 2 || string(b) != "payload" || r.Header.Get("X-Test") != "yes" {
			bad.Add(1)
		}
	}))
	rep, err := Run(context.Background(), Config{
		Protocol: HTTP2, Targets: []Target{{URL: u + "/"}}, Body: []byte("payload"),
		Headers: []Header{{Key: "X-Test", Value: "yes"}}, Requests: 100,
	})
	if err != nil || rep.Responses != 100 || bad.Load() != 0 {
		t.Fatalf("err %v, responses %d, bad %d", err, rep.Responses, bad.Load())
	}
}

// TestH2AgainstHTTP1: HTTP/2 without TLS against a listener that speaks
// only HTTP/1.1 fails at once, saying so and how to enable h2c.
func TestH2AgainstHTTP1(t *testing.T) {
	url, _ := startFastHTTP(t, okHandler)
	rep, err := Run(context.Background(), Config{Protocol: HTTP2, Targets: []Target{{URL: url + "/"}}, Duration: 10 * time.Second})
	var noH2C *NoH2CError
	if !errors.As(err, &noH2C) || !strings.Contains(err.Error(), "does not speak h2c") || !strings.Contains(err.Error(), "h2c: true") {
		t.Fatalf("err = %v, want that the listener does not speak h2c", err)
	}
	// It fails while connecting, before any request is sent.
	if rep == nil || rep.Responses != 0 || !strings.Contains(rep.Aborted, "does not speak h2c") {
		t.Errorf("report %+v", rep)
	}
	// An h2c server passes the check.
	h2c := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	rep, err = Run(context.Background(), Config{Protocol: HTTP2, Targets: []Target{{URL: h2c + "/"}}, Requests: 10})
	if err != nil || rep.Responses != 10 {
		t.Fatalf("h2c: %v %+v", err, rep)
	}
}
