package cluster

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzH2ClientFrames has a peer answer a request with arbitrary bytes
// after its SETTINGS, then close: the client must fail or succeed, never
// panic or hang.
//
//	go test -run '^$' -fuzz FuzzH2ClientFrames -fuzztime 30s ./proxy/cluster
func FuzzH2ClientFrames(f *testing.F) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "2"})
	head := append([]byte(nil), block.Bytes()...)
	seed := func(write func()) {
		buf.Reset()
		write()
		f.Add(append([]byte(nil), buf.Bytes()...))
	}
	seed(func() {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: head, EndHeaders: true})
		fr.WriteData(1, true, []byte("ok"))
	})
	seed(func() {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: head[:1], EndHeaders: false})
		fr.WriteContinuation(1, true, head[1:])
		fr.WriteDataPadded(1, false, []byte("o"), make([]byte, 3))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: head[:1], EndStream: true, EndHeaders: true})
	})
	seed(func() { fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye")) })
	seed(func() { fr.WriteRSTStream(1, http2.ErrCodeRefusedStream) })
	seed(func() {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		fr.WriteWindowUpdate(0, 1<<31-1)
		fr.WritePing(false, [8]byte{1})
		fr.WriteData(3, true, nil)
	})

	// One listener for the whole run, answering with the input of the
	// moment: a listener per input left tens of thousands of connections
	// in TIME_WAIT, from ports that a new listener could then not take,
	// where connections to one loopback address may reuse them.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	var answer atomic.Pointer[[]byte]
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			data := *answer.Load()
			// Every connection is answered so: the client may open
			// another after a GOAWAY.
			go func() {
				defer c.Close()
				preface := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(c, preface); err != nil {
					return
				}
				http2.NewFramer(c, nil).WriteSettings()
				c.Write(data)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			}()
		}
	}()

	f.Fuzz(func(t *testing.T, data []byte) {
		answer.Store(&data)
		c := newH2Client(poolKey{addr: ln.Addr().String(), connectTimeout: 5 * time.Second, idleTimeout: time.Minute, http2: true}, nil)
		defer c.tr.CloseIdleConnections()
		var resp fasthttp.Response
		var s Body
		if err := c.do(get("/"), &resp, 5*time.Second, &s); err != nil {
			return
		}
		if s.Active() {
			io.Copy(io.Discard, &s)
			s.Close()
		}
	})
}
