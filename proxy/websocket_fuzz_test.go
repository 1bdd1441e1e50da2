package proxy

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzPeekHead feeds peekHead what an upstream may answer an upgrade with:
// it returns a head that ends the way a head ends and lies within the
// bytes, or an error, and never panics.
func FuzzPeekHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"))
	f.Add([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 101\r\n"))
	f.Add(bytes.Repeat([]byte("a"), maxUpgradeHead+10))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 512)
		head, err := peekHead(br)
		if err != nil {
			return
		}
		if !bytes.HasSuffix(head, []byte("\r\n\r\n")) || !bytes.HasPrefix(in, head) {
			t.Fatalf("head %q is not a prefix of the input ending the head", head)
		}
		if bytes.Contains(head[:len(head)-4], []byte("\r\n\r\n")) {
			t.Fatalf("head %q runs past the first blank line", head)
		}
	})
}

// FuzzTokenListHas checks the Connection header parser against a plain
// reference.
func FuzzTokenListHas(f *testing.F) {
	f.Add([]byte("keep-alive, Upgrade"), "upgrade")
	f.Add([]byte("upgrade"), "upgrade")
	f.Add([]byte(" , ,close"), "close")
	f.Fuzz(func(t *testing.T, v []byte, token string) {
		want := false
		for _, item := range bytes.Split(v, []byte(",")) {
			if len(v) == 0 {
				break // an absent header holds no token
			}
			if bytes.EqualFold(bytes.TrimSpace(item), []byte(token)) {
				want = true
			}
		}
		if got := tokenListHas(v, token); got != want {
			t.Fatalf("tokenListHas(%q, %q) = %v, want %v", v, token, got, want)
		}
	})
}
