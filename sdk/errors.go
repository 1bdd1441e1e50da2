package sdk

import (
	"errors"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// Errors that host functions report. Compare with errors.Is: every error
// the SDK returns for a failed host call wraps one of them.
var (
	ErrNotFound        = errors.New("not found")
	ErrBadArgument     = errors.New("bad argument")
	ErrEmpty           = errors.New("empty")
	ErrCASMismatch     = errors.New("compare-and-swap mismatch")
	ErrUnimplemented   = errors.New("not implemented by the host")
	ErrInvalidMemory   = errors.New("invalid memory access")
	ErrParse           = errors.New("parse failure")
	ErrSerialization   = errors.New("serialization failure")
	ErrInternalFailure = errors.New("host internal failure")
	// ErrNoContext is returned when a function needs a request or root
	// context and is called outside of one.
	ErrNoContext = errors.New("no effective context")
)

// HostError is a host function that returned a status other than OK.
type HostError struct {
	Op     string // the host function, e.g. "proxy_get_property"
	Status abi.Status
}

func (e *HostError) Error() string { return e.Op + ": " + e.Status.String() }

// Unwrap returns the sentinel error of the status.
func (e *HostError) Unwrap() error {
	switch e.Status {
	case abi.StatusNotFound:
		return ErrNotFound
	case abi.StatusBadArgument:
		return ErrBadArgument
	case abi.StatusEmpty:
		return ErrEmpty
	case abi.StatusCasMismatch:
		return ErrCASMismatch
	case abi.StatusUnimplemented:
		return ErrUnimplemented
	case abi.StatusInvalidMemoryAccess:
		return ErrInvalidMemory
	case abi.StatusParseFailure:
		return ErrParse
	case abi.StatusSerializationFailure:
		return ErrSerialization
	}
	return ErrInternalFailure
}

// check turns a status into an error.
func check(op string, st abi.Status) error {
	if st == abi.StatusOK {
		return nil
	}
	return &HostError{Op: op, Status: st}
}
