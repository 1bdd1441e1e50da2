package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/internal/h1"
)

// The raw-request corpus: each file of testdata/h1corpus is a request (or
// several, pipelined) as bytes on the wire, and what must come of it: the
// statuses the client reads, whether the proxy then closes the connection,
// and what the upstream receives, byte for byte as its own strict parser
// reads it. The upstream is a recorder on a raw socket, so that nothing
// between the proxy and the test forgives a framing mistake.
//
// A file reads:
//
//	# what the case checks
//	status: 400 [200 ...]   statuses of the responses, in order
//	close: yes|no           whether the proxy closes after them
//	upstream: N             requests the upstream receives
//	forwarded: METHOD TARGET BODY   one per request received (optional;
//	                        BODY in Go escapes, - for none)
//	trickle: DURATION       send the bytes after the header one at a time,
//	                        this far apart (optional)
//	--- request
//	the bytes, one line per line of text; the line ends are not part of
//	them: write \r\n, \n, \t, \xNN, \\ for what is
//
// A case that keeps the connection open is followed by a probe request,
// whose 200 must come last: a smuggled request answered in between would
// show as one status too many.

const corpusConfig = `
admin: {address: "off"}
listeners:
  - {name: main, address: "127.0.0.1:0", body_read_timeout: 400ms, max_request_body_bytes: 65536}
clusters: [{name: rec, endpoints: [{address: "{{rec}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {name: static, match: {path: /static}, direct_response: {status: 200, body: "static\n"}}
      - {name: up, match: {prefix: /}, cluster: rec}
`

const probe = "GET /probe HTTP/1.1\r\nHost: probe\r\n\r\n"

type corpusCase struct {
	name      string
	statuses  []int
	close     bool
	upstream  int
	forwarded []string // "METHOD TARGET BODY", BODY quoted
	trickle   time.Duration
	raw       []byte
}

func TestFramingCorpus(t *testing.T) {
	rec := startRecorder(t)
	e := newEnv(t, corpusConfig, vars{"rec": rec.addr()})
	cases := loadCorpus(t, "testdata/h1corpus")
	if len(cases) < 40 {
		t.Fatalf("only %d cases in the corpus", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := rec.count()
			statuses, closed := exchangeRaw(t, e.addr(t, "main"), tc)
			want := append([]int(nil), tc.statuses...)
			if !tc.close {
				want = append(want, 200)
			}
			if fmt.Sprint(statuses) != fmt.Sprint(want) {
				t.Errorf("statuses %v, want %v", statuses, want)
			}
			if closed != tc.close {
				t.Errorf("connection closed: %v, want %v", closed, tc.close)
			}
			got := rec.since(before)
			var forwarded []string
			for _, r := range got {
				if r.uri != "/probe" {
					forwarded = append(forwarded, r.String())
				}
			}
			if len(forwarded) != tc.upstream {
				t.Errorf("the upstream received %d requests, want %d: %q", len(forwarded), tc.upstream, forwarded)
			}
			if tc.forwarded != nil && fmt.Sprint(forwarded) != fmt.Sprint(tc.forwarded) {
				t.Errorf("the upstream received\n\t%q\nwant\n\t%q", forwarded, tc.forwarded)
			}
			for _, r := range got {
				if r.err != "" {
					t.Errorf("the upstream could not read what the proxy sent: %s\n%q", r.err, r.raw)
				}
			}
		})
	}
	// Nothing the corpus sent broke the proxy.
	if r := e.get(t, "", "/after"); r.status != http.StatusOK {
		t.Errorf("after the corpus: status %d", r.status)
	}
}

// exchangeRaw writes a case's bytes and reads the responses, until the
// proxy closes the connection or the probe's response has come.
func exchangeRaw(t *testing.T, addr string, tc corpusCase) (statuses []int, closed bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		raw := tc.raw
		if tc.trickle > 0 {
			head := bytes.Index(raw, []byte("\r\n\r\n")) + 4
			if _, err := c.Write(raw[:head]); err != nil {
				return
			}
			for _, b := range raw[head:] {
				time.Sleep(tc.trickle)
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
			}
			return
		}
		if !tc.close {
			raw = append(raw[:len(raw):len(raw)], probe...)
		}
		_, _ = c.Write(raw)
	}()
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				return statuses, true
			}
			t.Fatalf("after statuses %v: %v", statuses, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
		if resp.Header.Get("X-Probe") != "" {
			return statuses, false
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}

func loadCorpus(t testing.TB, dir string) []corpusCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var out []corpusCase
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tc, err := parseCase(string(data))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		tc.name = strings.TrimSuffix(filepath.Base(f), ".txt")
		out = append(out, tc)
	}
	return out
}

func parseCase(s string) (corpusCase, error) {
	var tc corpusCase
	meta, raw, ok := strings.Cut(s, "--- request\n")
	if !ok {
		return tc, errors.New("no --- request line")
	}
	for _, line := range strings.Split(meta, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return tc, fmt.Errorf("%q: want key: value", line)
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "status":
			for _, f := range strings.Fields(v) {
				n, err := strconv.Atoi(f)
				if err != nil {
					return tc, fmt.Errorf("status: %w", err)
				}
				tc.statuses = append(tc.statuses, n)
			}
		case "close":
			tc.close = v == "yes"
		case "upstream":
			tc.upstream, err = strconv.Atoi(v)
		case "forwarded":
			tc.forwarded = append(tc.forwarded, v)
		case "trickle":
			tc.trickle, err = time.ParseDuration(v)
		default:
			return tc, fmt.Errorf("unknown key %q", k)
		}
		if err != nil {
			return tc, fmt.Errorf("%s: %w", k, err)
		}
	}
	var b []byte
	for _, line := range strings.Split(strings.TrimSuffix(raw, "\n"), "\n") {
		u, err := unescape(line)
		if err != nil {
			return tc, fmt.Errorf("request line %q: %w", line, err)
		}
		b = append(b, u...)
	}
	tc.raw = b
	return tc, nil
}

// unescape reads \r \n \t \\ and \xNN; every other byte stands for itself.
func unescape(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		if i+1 == len(s) {
			return nil, errors.New("a lone backslash")
		}
		i++
		switch s[i] {
		case 'r':
			out = append(out, '\r')
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case '\\':
			out = append(out, '\\')
		case 'x':
			if i+3 > len(s) {
				return nil, errors.New("short \\x")
			}
			n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, err
			}
			out = append(out, byte(n))
			i += 2
		default:
			return nil, fmt.Errorf("unknown escape \\%c", s[i])
		}
	}
	return out, nil
}

// recorder is an upstream on a raw socket that records every request it
// reads, with Go's parser, and the exact bytes it took.
type recorder struct {
	ln   net.Listener
	mu   sync.Mutex
	reqs []recorded
	wg   sync.WaitGroup
}

type recorded struct {
	method, uri string
	header      http.Header
	body        []byte
	raw         []byte
	err         string // what the parser said of bytes it could not read as a request
}

func (r recorded) String() string {
	body := "-"
	if len(r.body) > 0 {
		body = strconv.Quote(string(r.body))
	}
	return r.method + " " + r.uri + " " + body
}

func startRecorder(tb testing.TB) *recorder {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &recorder{ln: ln}
	conns := map[net.Conn]bool{}
	var mu sync.Mutex
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *recorder) addr() string { return r.ln.Addr().String() }

func (r *recorder) serve(c net.Conn) {
	defer c.Close()
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &raw))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			// A connection the proxy closes between requests is fine;
			// bytes that are not a request are not.
			if raw.Len()-br.Buffered() > 0 && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				r.add(recorded{raw: bytes.Clone(raw.Bytes()), err: err.Error()})
			}
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			// The proxy gave up on the body: an incomplete request,
			// which the upstream never serves.
			return
		}
		used := raw.Len() - br.Buffered()
		rec := recorded{method: req.Method, uri: req.RequestURI, header: req.Header, body: body, raw: bytes.Clone(raw.Bytes()[:used])}
		raw.Next(used)
		r.add(rec)
		resp := "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
		if req.RequestURI == "/probe" {
			resp += "X-Probe: 1\r\n"
		}
		if _, err := io.WriteString(c, resp+"\r\nok\n"); err != nil {
			return
		}
	}
}

func (r *recorder) add(rec recorded) {
	r.mu.Lock()
	r.reqs = append(r.reqs, rec)
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

func (r *recorder) since(n int) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs[n:]...)
}

// FuzzFraming sends random bytes through a real proxy to the recorder and
// checks that every request the upstream receives is one that h1 found
// whole and well framed in the bytes sent, in order, with the same method
// and body: the proxy never forwards a request framed otherwise than it
// decided. Its seeds are the corpus.
func FuzzFraming(f *testing.F) {
	for _, tc := range loadCorpus(f, "testdata/h1corpus") {
		if tc.trickle == 0 {
			f.Add(tc.raw)
		}
	}
	rec := startRecorder(f)
	cfg, err := config.Parse([]byte(strings.ReplaceAll(corpusConfig, "{{rec}}", rec.addr())), "fuzz.yaml")
	if err != nil {
		f.Fatal(err)
	}
	srv := proxy.NewServer(proxy.Options{})
	if err := srv.Apply(context.Background(), cfg, ""); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	addr := srv.Addr("main").String()
	// Each input is sent from a loopback address of its own, which the
	// proxy passes upstream in X-Forwarded-For: a request that reaches the
	// upstream after its input's turn is still checked against it.
	var (
		mu      sync.Mutex
		seq     int
		sent    = map[string]*fuzzInput{}
		checked int
	)
	check := func(t *testing.T) {
		mu.Lock()
		defer mu.Unlock()
		recs := rec.since(checked)
		checked += len(recs)
		for _, r := range recs {
			if r.err != "" {
				t.Fatalf("the upstream could not read what the proxy sent: %s\n%q", r.err, r.raw)
			}
			fi := sent[r.header.Get("X-Forwarded-For")]
			if fi == nil {
				t.Fatalf("the upstream received %s from no input sent (X-Forwarded-For %q)", r, r.header.Get("X-Forwarded-For"))
			}
			for fi.next < len(fi.msgs) && !sameRequest(fi.msgs[fi.next], r) {
				fi.next++
			}
			if fi.next == len(fi.msgs) {
				t.Fatalf("the upstream received %s, which is not among the requests sent: %q", r, fi.in)
			}
			fi.next++
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		msgs, _ := h1.Split(in)
		mu.Lock()
		seq++
		src := loopback(seq)
		sent[src.String()] = &fuzzInput{in: bytes.Clone(in), msgs: msgs}
		if seq > 1<<16 {
			delete(sent, loopback(seq-1<<16).String()) // long answered
		}
		mu.Unlock()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(in)
		// Every complete request is answered, or the proxy closes (a
		// refused request is answered, then closed).
		br := bufio.NewReader(c)
		for answered := 0; answered < len(msgs); {
			method, _, _ := bytes.Cut(msgs[answered].Head, []byte(" "))
			resp, err := http.ReadResponse(br, &http.Request{Method: string(method)})
			if err != nil {
				if isTimeout(err) {
					t.Fatalf("the proxy answered %d of %d requests and did not close: %q", answered, len(msgs), in)
				}
				break
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
				answered++
			}
		}
		_ = c.Close()
		check(t)
	})
}

// loopback is the n-th address of 127.1.0.0 to 127.254.255.255.
func loopback(n int) net.IP {
	n %= 254 << 16
	return net.IPv4(127, byte(1+n>>16), byte(n>>8), byte(n))
}

// fuzzInput is one input of FuzzFraming: the bytes, the requests h1
// found whole in them, and how many of those the upstream was matched to.
type fuzzInput struct {
	in   []byte
	msgs []h1.Message
	next int
}

// sameRequest reports whether the upstream received m: same method, same
// body.
func sameRequest(m h1.Message, r recorded) bool {
	method, _, _ := bytes.Cut(m.Head, []byte(" "))
	return string(method) == r.method && bytes.Equal(m.Body, r.body)
}
