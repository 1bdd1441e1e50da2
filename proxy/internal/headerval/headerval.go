// Package headerval holds what the HTTP/2 and HTTP/3 front ends share
// about header values: the common values they hand out without copying,
// and a case-insensitive name test that does not allocate.
package headerval

// common are header values common enough to be worth not allocating:
// net/http's header map and the HPACK encoder hold strings, so any other
// value is copied out of the fasthttp response once per request.
var common = func() map[string]string {
	m := map[string]string{}
	for _, v := range []string{
		"application/json", "application/json; charset=utf-8", "text/plain", "text/plain; charset=utf-8",
		"text/html", "text/html; charset=utf-8", "application/grpc", "application/grpc+proto",
		"application/octet-stream", "text/event-stream", "gzip", "br", "deflate", "identity",
		"no-cache", "no-store", "chunked", "close", "keep-alive", "nosniff", "bytes", "*",
		"Accept-Encoding", "Origin", "0",
	} {
		m[v] = v
	}
	return m
}()

// Common returns the constant string equal to v, if v is a common value.
// It does not allocate.
func Common(v []byte) (string, bool) {
	s, ok := common[string(v)]
	return s, ok
}

// EqualFold reports whether b equals the lowercase ASCII s, ignoring case.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
