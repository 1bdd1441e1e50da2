// Package headerval holds what the HTTP/2 and HTTP/3 front ends and the
// HTTP/2 client share about header fields: the common values they hand
// out without copying, a case-insensitive name test that does not
// allocate, and the syntax of names.
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

// tokenLower holds the characters of a token (RFC 9110) but upper case
// letters, which HTTP/2 field names must not have.
var tokenLower, token [256]bool

func init() {
	for c := '0'; c <= '9'; c++ {
		tokenLower[c], token[c] = true, true
	}
	for c := 'a'; c <= 'z'; c++ {
		tokenLower[c], token[c] = true, true
	}
	for c := 'A'; c <= 'Z'; c++ {
		token[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		tokenLower[c], token[c] = true, true
	}
}

// H2Name reports whether s is a field name HTTP/2 allows (RFC 9113,
// 8.2.1): a token with no upper case letter.
func H2Name(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenLower[s[i]] {
			return false
		}
	}
	return true
}

// Token reports whether s is a token (RFC 9110, 5.6.2), as a method is.
func Token(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !token[s[i]] {
			return false
		}
	}
	return true
}
