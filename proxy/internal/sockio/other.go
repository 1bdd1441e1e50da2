//go:build !linux

package sockio

import (
	"errors"
	"net"
)

// Conn is not used on this system: New never returns one.
type Conn struct{}

// New reports that the socket is left to net.TCPConn.
func New(*net.TCPConn) (*Conn, bool) { return nil, false }

// PollerWait reports false: a Conn is not used on this system.
func PollerWait() bool { return false }

// Wrap returns c.
func Wrap(c net.Conn) net.Conn { return c }

func (*Conn) Read([]byte) (int, error)          { return 0, errors.ErrUnsupported }
func (*Conn) Write([]byte) (int, error)         { return 0, errors.ErrUnsupported }
func (*Conn) SendRecv(_, _ []byte) (int, error) { return 0, errors.ErrUnsupported }
