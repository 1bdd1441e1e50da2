package h2_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wasmgate/wasmgate/proxy/h2"
)

// FuzzServeConn feeds a server connection arbitrary bytes after the
// preface: whatever they are, it must neither panic nor hang, and must
// end when the client goes away.
func FuzzServeConn(f *testing.F) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.AllowIllegalWrites = true
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	block := func(fields ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return append([]byte(nil), hb.Bytes()...)
	}
	seed := func(write func()) {
		buf.Reset()
		write()
		f.Add(append([]byte(nil), buf.Bytes()...))
	}
	get := block(":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/")
	post := block(":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/", "content-length", "3")
	seed(func() {
		_ = fr.WriteSettings()
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get, EndStream: true, EndHeaders: true})
	})
	seed(func() {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: post[:4], EndHeaders: false})
		_ = fr.WriteContinuation(1, true, post[4:])
		_ = fr.WriteData(1, false, []byte("ab"))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-t", "1"), EndStream: true, EndHeaders: true})
	})
	seed(func() {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: get, EndHeaders: true, PadLength: 5,
			Priority: http2.PriorityParam{StreamDep: 3, Weight: 1}})
		_ = fr.WriteRSTStream(3, http2.ErrCodeCancel)
		_ = fr.WriteWindowUpdate(0, 1000)
		_ = fr.WritePing(false, [8]byte{})
		_ = fr.WriteDataPadded(3, true, []byte("x"), []byte{0, 0})
	})
	seed(func() {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: post, EndHeaders: true})
		_ = fr.WriteData(1, true, []byte("abc"))
		_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		srv := h2.NewServer(sha256Handler, h2.Options{IdleTimeout: 500 * time.Millisecond, MaxHeaderBytes: 4096})
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			_ = srv.ServeConn(server)
			close(done)
		}()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_ = client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.WriteString(client, http2.ClientPreface)
		_, _ = client.Write(data)
		_ = client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the connection did not end after the client went away")
		}
	})
}
