package sdk

import (
	"encoding/binary"
	"time"
	"unsafe"
)

// Properties are the host's attributes of the request, the connection,
// the plugin and the proxy, named by a path as Envoy names them:
//
//	request     path, url_path, host, scheme, method, headers, id, protocol, time, duration, size
//	response    code, code_details, flags, headers, size
//	source      address, port            (the downstream peer)
//	destination address, port            (the local address)
//	connection  mtls, tls_version, requested_server_name, uri_san_peer_certificate,
//	            dns_san_peer_certificate, subject_peer_certificate, sha256_peer_certificate_digest, id
//	upstream    address, port
//	route_name, cluster_name, listener_name, plugin_name, plugin_root_id
//	node        id, metadata
//
// Strings are raw bytes; integers, durations and timestamps are 8 bytes,
// little-endian (nanoseconds for times); booleans are one byte.

// Property returns the raw value of the property at path, e.g.
// Property("source", "address"). A missing property is ErrNotFound.
func Property(path ...string) ([]byte, error) {
	b, st := hostGetProperty(encodePath(path))
	return b, check("proxy_get_property", st)
}

// PropertyString returns a string property.
func PropertyString(path ...string) (string, error) {
	b, err := Property(path...)
	// b is a fresh copy nobody else holds: the string may share it.
	return unsafe.String(unsafe.SliceData(b), len(b)), err
}

// PropertyInt returns an integer property.
func PropertyInt(path ...string) (int64, error) {
	b, err := Property(path...)
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, ErrParse
	}
	return int64(binary.LittleEndian.Uint64(b)), nil
}

// PropertyBool returns a boolean property.
func PropertyBool(path ...string) (bool, error) {
	b, err := Property(path...)
	if err != nil {
		return false, err
	}
	if len(b) != 1 {
		return false, ErrParse
	}
	return b[0] != 0, nil
}

// PropertyTime returns a timestamp property.
func PropertyTime(path ...string) (time.Time, error) {
	n, err := PropertyInt(path...)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, n), nil
}

// PropertyDuration returns a duration property, such as
// ("request", "duration").
func PropertyDuration(path ...string) (time.Duration, error) {
	n, err := PropertyInt(path...)
	return time.Duration(n), err
}

// SetProperty sets a property of the current request. Writable
// properties are the request's filter state: the host keeps the value
// under "wasm." and the path's segments joined by dots, where the access
// log and later filters can read it.
func SetProperty(path []string, value []byte) error {
	return check("proxy_set_property", hostSetProperty(encodePath(path), value))
}

// SetFilterState stores value under key ("wasm.<key>") in the current
// request's filter state.
func SetFilterState(key string, value []byte) error {
	return SetProperty([]string{key}, value)
}

// pathBuf holds the encoded path of the property being read or written.
// The host reads it during the call only, so one buffer serves them all.
var pathBuf []byte

// encodePath joins path with NULs into pathBuf, valid until the next call.
func encodePath(path []string) []byte {
	b := pathBuf[:0]
	for i, p := range path {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	pathBuf = b
	return b
}
