package filter

import "errors"

var (
	// ErrFailOpen, wrapped in an error from Factory.NewStream, lets the
	// request go on without the filter.
	ErrFailOpen = errors.New("filter failed open")
	// ErrUnknownCluster is returned by Upstreams.Call for a cluster name
	// that is not in the live configuration.
	ErrUnknownCluster = errors.New("unknown cluster")
)
