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
	// FailureDownstream: reading the client's request body failed (a
	// malformed or truncated body, a client that went away or stalled):
	// the endpoint did nothing wrong.
	FailureDownstream
)

var failureNames = [...]string{"none", "connect", "timeout", "reset", "overflow", "downstream"}

// DownstreamError is an error from reading the body of the request being
// sent, which comes from the client: Classify tells it apart from the
// endpoint's failures, and outlier detection does not count it.
type DownstreamError struct{ Err error }

func (e *DownstreamError) Error() string { return "reading the request body: " + e.Err.Error() }
func (e *DownstreamError) Unwrap() error { return e.Err }

func (f Failure) String() string { return failureNames[f] }

// Classify tells which kind of failure an error from Endpoint.Do is.
func Classify(err error) Failure {
	switch {
	case err == nil:
		return FailureNone
	case errors.As(err, new(*DownstreamError)):
		return FailureDownstream
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
