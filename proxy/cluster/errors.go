package cluster

import (
	"errors"
	"net"
	"syscall"

	"github.com/valyala/fasthttp"
)

// Failure says how an upstream exchange failed.
type Failure uint8

const (
	// FailureNone: the exchange succeeded.
	FailureNone Failure = iota
	// FailureConnect: no connection could be made.
	FailureConnect
	// FailureTimeout: no response within the timeout.
	FailureTimeout
	// FailureReset: the connection broke before a whole response header.
	FailureReset
	// FailureOverflow: the endpoint's connection limit was reached.
	FailureOverflow
)

var failureNames = [...]string{"none", "connect", "timeout", "reset", "overflow"}

func (f Failure) String() string { return failureNames[f] }

// Classify tells which kind of failure an error from Endpoint.Do is.
func Classify(err error) Failure {
	switch {
	case err == nil:
		return FailureNone
	case errors.Is(err, fasthttp.ErrNoFreeConns), errors.Is(err, ErrOverflow):
		return FailureOverflow
	case errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, syscall.ECONNREFUSED):
		return FailureConnect
	case errors.Is(err, fasthttp.ErrTimeout):
		return FailureTimeout
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return FailureConnect
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return FailureTimeout
	}
	return FailureReset
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
