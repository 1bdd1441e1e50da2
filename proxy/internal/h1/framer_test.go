package h1

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	const get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	cases := []struct {
		name   string
		in     string
		bodies []string // of the complete requests
		status int      // of the violation; 0 for none
	}{
		{"one request", get, []string{""}, 0},
		{"pipelined", get + get, []string{"", ""}, 0},
		{"empty lines before a request", "\r\n\r\n" + get, []string{""}, 0},
		{"content length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + get, []string{"hello", ""}, 0},
		{"content length with spaces", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  3 \r\n\r\nabc", []string{"abc"}, 0},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-T: 1\r\n\r\n" + get, []string{"abcde", ""}, 0},
		{"chunked, any case", "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  Chunked \r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", []string{"0123456789"}, 0},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\n\r\n", []string{""}, 0},
		{"an incomplete request", "GET / HTTP/1.1\r\nHost: a\r\n", nil, 0},
		{"upgrade without a body", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + get, []string{"", ""}, 0},

		{"chunk data not followed by CRLF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nAAAA\r\n0\r\n\r\n", nil, 400},
		{"chunk data followed by LF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nAA\n0\r\n\r\n", nil, 400},
		{"negative chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", nil, 400},
		{"space after the chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nAA\r\n0\r\n\r\n", nil, 400},
		{"huge chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", nil, 400},
		{"both framings", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", nil, 400},
		{"two content lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", nil, 400},
		{"a list as content length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\na", nil, 400},
		{"a signed content length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na", nil, 400},
		{"an empty content length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", nil, 400},
		{"gzip then chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", nil, 501},
		{"obfuscated chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", nil, 501},
		{"two transfer encodings", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", nil, 400},
		{"chunked in HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", nil, 400},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", nil, 400},
		{"bare LF in a field", "GET / HTTP/1.1\r\nHost: a\n\r\n", nil, 400},
		{"bare CR", "GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", nil, 400},
		{"space in a name", "GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n", nil, 400},
		{"space before the colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 1\r\n\r\na", nil, 400},
		{"underscore content length", "POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 1\r\n\r\na", nil, 400},
		{"underscore transfer encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer_Encoding: chunked\r\n\r\na", nil, 400},
		{"folded line", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", nil, 400},
		{"NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\x002\r\n\r\n", nil, 400},
		{"no host", "GET / HTTP/1.1\r\nX: 1\r\n\r\n", nil, 400},
		{"HTTP/1.0 without host", "GET / HTTP/1.0\r\n\r\n", nil, 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", nil, 400},
		{"connection names host", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Host\r\n\r\n", nil, 400},
		{"connection names content length", "POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 1\r\n\r\na", nil, 400},
		{"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", nil, 501},
		{"upgrade with a chunked body", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", nil, 400},
		{"trailer names content length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", nil, 400},
		{"a bad second request", get + "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", []string{""}, 400},
		{"garbage", "\x16\x03\x01\x02\x00", nil, 400},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", []string{""}, 0},
		{"GET *", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", nil, 400},
		{"a bad version", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", nil, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := Split([]byte(tc.in))
			var bodies []string
			for _, m := range msgs {
				bodies = append(bodies, string(m.Body))
			}
			if strings.Join(bodies, "|") != strings.Join(tc.bodies, "|") || len(bodies) != len(tc.bodies) {
				t.Errorf("bodies %q, want %q", bodies, tc.bodies)
			}
			status := 0
			if err != nil {
				status = err.Status
			}
			if status != tc.status {
				t.Errorf("violation %v, want status %d", err, tc.status)
			}
			checkSplits(t, []byte(tc.in))
		})
	}
}

// checkSplits feeds in as a connection delivers it in pieces of every
// size, and checks that the bytes handed on and the violation do not
// depend on the pieces.
func checkSplits(t *testing.T, in []byte) {
	t.Helper()
	whole, wholeErr := feedAll(in, len(in))
	for size := 1; size < len(in); size++ {
		out, err := feedAll(in, size)
		if (err == nil) != (wholeErr == nil) || err != nil && err.Status != wholeErr.Status {
			t.Fatalf("in pieces of %d: violation %v, whole: %v", size, err, wholeErr)
		}
		// A violation found in a later piece cannot hold back a header
		// handed on in an earlier one: the pieces hand on at least as much.
		if !bytes.HasPrefix(out, whole) && !bytes.HasPrefix(whole, out) {
			t.Fatalf("in pieces of %d: handed on %q, whole: %q", size, out, whole)
		}
	}
}

// feedAll reads in through a Conn whose connection delivers it in pieces
// of size bytes, and returns what the Conn handed on and its violation.
func feedAll(in []byte, size int) ([]byte, *Error) {
	c := &Conn{Conn: &pieces{in: in, size: size}}
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			var fe *Error
			errors.As(err, &fe)
			return out, fe
		}
	}
}

// pieces is a connection that delivers its bytes size at a time, then
// io.EOF.
type pieces struct {
	net.Conn
	in   []byte
	size int
}

func (p *pieces) Read(b []byte) (int, error) {
	if len(p.in) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.in[:min(p.size, len(p.in))])
	p.in = p.in[n:]
	return n, nil
}

func TestFeedHoldsBackARefusedRequest(t *testing.T) {
	// The violation lies in the body: the header's last line is held
	// back, so that the request is never complete for the server.
	in := "GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nAAAA\r\n"
	var f Framer
	n := f.Feed([]byte(in))
	want := "GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
	if in[:n] != want {
		t.Fatalf("handed on %q, want %q", in[:n], want)
	}
	if f.Err() == nil || f.Err().Status != 400 {
		t.Fatalf("violation %v", f.Err())
	}
	if f.Feed([]byte("more")) != 0 {
		t.Fatal("bytes handed on after a violation")
	}
}

func TestAnswered(t *testing.T) {
	up := "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
	for _, tc := range []struct {
		answer string
		tunnel bool
	}{
		{"HTTP/1.1 101 Switching Protocols\r\n", true},
		{"HTTP/1.1 101\r\n", true},
		{"HTTP/1.1 404 Not Found\r\n", false},
		{"HTTP/1.1 1010 x\r\n", false},
	} {
		var f Framer
		in := []byte(up + "\x81\x05hello")
		n := f.Feed(in)
		if n != len(up) || !f.Awaiting() {
			t.Fatalf("handed on %d bytes, awaiting %v", n, f.Awaiting())
		}
		f.Answered([]byte(tc.answer))
		if f.Tunneling() != tc.tunnel {
			t.Errorf("%q: tunnel %v, want %v", tc.answer, f.Tunneling(), tc.tunnel)
		}
		m := f.Feed(in[n:])
		if tc.tunnel && m != len(in)-n {
			t.Errorf("%q: tunnel handed on %d of %d bytes", tc.answer, m, len(in)-n)
		}
		if !tc.tunnel && f.Err() == nil {
			t.Errorf("%q: WebSocket bytes read as HTTP/1.1 without a violation", tc.answer)
		}
	}
}

func FuzzFramer(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 3)
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), 7)
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 1)
	f.Fuzz(func(t *testing.T, in []byte, size int) {
		if size <= 0 || size > len(in) {
			size = len(in)
		}
		whole, wholeErr := feedAll(in, len(in))
		out, err := feedAll(in, size)
		if (err == nil) != (wholeErr == nil) {
			t.Fatalf("in pieces of %d: violation %v, whole: %v", size, err, wholeErr)
		}
		if !bytes.HasPrefix(out, whole) && !bytes.HasPrefix(whole, out) {
			t.Fatalf("in pieces of %d: handed on %q, whole: %q", size, out, whole)
		}
		// What is handed on never holds a request that Split does not
		// find whole and valid.
		msgs, _ := Split(out)
		all, _ := Split(in)
		if len(msgs) > len(all) {
			t.Fatalf("handed on %d requests, the stream has %d", len(msgs), len(all))
		}
	})
}

func TestConnEnds(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"between requests", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", io.EOF},
		{"in the trailers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r", io.ErrUnexpectedEOF},
		{"in a body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab", io.ErrUnexpectedEOF},
		{"in a header", "GET / HTTP/1.1\r\nHo", io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			go func() {
				_, _ = client.Write([]byte(tc.in))
				_ = client.Close()
			}()
			c := Wrap(server)
			defer c.Close()
			// io.ReadAll takes io.EOF for the end and returns nil.
			got, err := io.ReadAll(c)
			// The trailers are held back until whole: a cut in them
			// hands on nothing from the last chunk's line end.
			want, _, _ := strings.Cut(tc.in, "0\r\nX-T")
			if strings.Contains(tc.in, "0\r\nX-T") {
				want += "0\r"
			}
			if string(got) != want || !errors.Is(err, tc.want) && !(tc.want == io.EOF && err == nil) {
				t.Errorf("read %q, %v; want %q, then %v", got, err, want, tc.want)
			}
		})
	}
}

// TestTrailersHeld checks that the line of a chunked body's last chunk is
// handed on only with whole trailers: fasthttp takes a failure to read
// the trailers' first byte for the end of the body.
func TestTrailersHeld(t *testing.T) {
	const head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n"
	const get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, tc := range []struct {
		name, in, out string
		status        int
	}{
		{"whole", head + "0\r\nX-T: 1\r\n\r\n" + get, head + "0\r\nX-T: 1\r\n\r\n" + get, 0},
		{"no trailers", head + "0\r\n\r\n" + get, head + "0\r\n\r\n" + get, 0},
		{"a violation in the trailers", head + "0\r\n\x00\r\n\r\n", head + "0\r", 400},
		{"a violation later in the trailers", head + "0\r\nX-T: 1\r\nBad Name: 2\r\n\r\n", head + "0\r", 400},
		{"cut in the trailers", head + "0\r\nX-T: 1\r", head + "0\r", 0},
		{"two, the second cut", head + "0\r\n\r\n" + head + "0\r\nX", head + "0\r\n\r\n" + head + "0\r", 0},
	} {
		for _, size := range []int{1, 2, 3, 7, len(tc.in)} {
			out, fe := feedAll([]byte(tc.in), size)
			status := 0
			if fe != nil {
				status = fe.Status
			}
			// A request refused or cut whole may be held back from
			// before its header's end: any prefix of the expected output
			// will do then, the last chunk's line end never.
			whole := string(out) == tc.out || tc.out != tc.in && strings.HasPrefix(tc.out, string(out))
			if !whole || status != tc.status {
				t.Errorf("%s, in pieces of %d: handed on %q (%v), want %q (status %d)", tc.name, size, out, fe, tc.out, tc.status)
			}
		}
	}
}
