package h2_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// loadClient sends the same GET on stream after stream of one h2c
// connection and counts the ends of their responses, parsing frame
// headers by hand: it allocates nothing, so what a benchmark or an
// allocation test counts is the server's.
type loadClient struct {
	c      net.Conn
	br     *bufio.Reader
	first  []byte // HEADERS of the first request: it fills HPACK's table
	next   []byte // HEADERS of every later one: indexed fields only
	out    []byte
	id     uint32
	hdr    [9]byte
	bodies int64 // response body bytes read
}

func dialLoad(tb testing.TB, addr, path string) *loadClient {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	block := func() []byte {
		buf.Reset()
		for _, f := range [][2]string{
			{":method", "GET"}, {":scheme", "http"}, {":authority", "api.example.com"}, {":path", path},
			{"accept", "application/json"}, {"user-agent", "bench/1.0"}, {"accept-encoding", "gzip"},
		} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return append([]byte(nil), buf.Bytes()...)
	}
	lc := &loadClient{c: c, br: bufio.NewReaderSize(c, 64<<10), first: block(), next: block(), id: 1}
	fr := http2.NewFramer(c, nil)
	_, _ = io.WriteString(c, http2.ClientPreface)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	_ = fr.WriteSettingsAck() // for the server's, which we do not read
	_ = fr.WriteWindowUpdate(0, 1<<30)
	return lc
}

// send queues n requests and writes them at once.
func (lc *loadClient) send(n int) {
	lc.out = lc.out[:0]
	for range n {
		block := lc.next
		if lc.id == 1 {
			block = lc.first
		}
		lc.out = append(lc.out, byte(len(block)>>16), byte(len(block)>>8), byte(len(block)),
			byte(http2.FrameHeaders), byte(http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream),
			byte(lc.id>>24), byte(lc.id>>16), byte(lc.id>>8), byte(lc.id))
		lc.out = append(lc.out, block...)
		lc.id += 2
	}
	if _, err := lc.c.Write(lc.out); err != nil {
		panic(err)
	}
}

// wait reads frames until n streams have ended.
func (lc *loadClient) wait(n int) {
	for n > 0 {
		if _, err := io.ReadFull(lc.br, lc.hdr[:]); err != nil {
			panic(err)
		}
		length := int(lc.hdr[0])<<16 | int(lc.hdr[1])<<8 | int(lc.hdr[2])
		t, flags := http2.FrameType(lc.hdr[3]), http2.Flags(lc.hdr[4])
		if _, err := lc.br.Discard(length); err != nil {
			panic(err)
		}
		switch t {
		case http2.FrameData:
			lc.bodies += int64(length)
		case http2.FrameRSTStream, http2.FrameGoAway:
			panic("unexpected " + t.String() + " from the server: " + string(binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(lc.hdr[5:]))))
		}
		if (t == http2.FrameData || t == http2.FrameHeaders) && flags.Has(http2.FlagDataEndStream) {
			n--
		}
	}
}
