//go:build !linux

package main

import (
	"net"
	"time"
)

// serve answers each connection from its own goroutine, with responses of
// its own, so that refreshing their Date races with no other connection.
// It returns only when listening or accepting fails, with the error: never
// nil.
func serve(addr string, _ *responses) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go serveConn(c, newResponses())
	}
}

func serveConn(c net.Conn, r *responses) {
	defer c.Close()
	in := make([]byte, 0, 64<<10)
	var out []*response
	for {
		if len(in) == cap(in) {
			in = append(in, 0)[:len(in)]
		}
		m, err := c.Read(in[len(in):cap(in)])
		if err != nil {
			return
		}
		in = in[:len(in)+m]
		r.tick(time.Now())
		var consumed int
		var closing bool
		out, consumed, closing = r.answers(in, out[:0])
		for _, resp := range out {
			if _, err := c.Write(resp.buf); err != nil {
				return
			}
		}
		if closing {
			return
		}
		in = in[:copy(in, in[consumed:])]
	}
}
