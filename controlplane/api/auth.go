package api

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"fmt"
	"strings"
)

// Role is what a token may do.
type Role int

// Roles, each allowed what the one before it is.
const (
	// RoleRead reads configuration, history, status and blobs, and
	// validates changes without applying them.
	RoleRead Role = iota + 1
	// RoleRegister may also register and deregister service endpoints.
	RoleRegister
	// RoleAdmin may change everything.
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleRegister:
		return "register"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole parses "read", "register" or "admin".
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(s) {
	case "read", "readonly", "read-only", "read_only":
		return RoleRead, nil
	case "register":
		return RoleRegister, nil
	case "admin":
		return RoleAdmin, nil
	}
	return 0, fmt.Errorf("unknown role %q (want read, register or admin)", s)
}

// Token is a bearer token, the role it grants and the name recorded in the
// history for changes made with it.
type Token struct {
	Name   string
	Role   Role
	Secret string
}

// ParseTokens reads a token file: one token a line as "ROLE NAME SECRET",
// with blank lines and lines starting with '#' ignored.
func ParseTokens(data []byte) ([]Token, error) {
	var out []Token
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want ROLE NAME SECRET", n)
		}
		role, err := ParseRole(f[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if len(f[2]) < 16 {
			return nil, fmt.Errorf("line %d: the secret of %q is shorter than 16 characters", n, f[1])
		}
		out = append(out, Token{Name: f[1], Role: role, Secret: f[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// authenticate returns the token matching the Authorization header. Every
// token is compared, in constant time, so the time taken does not tell
// which one was close.
func authenticate(tokens []Token, header string) (Token, bool) {
	secret, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || secret == "" {
		return Token{}, false
	}
	var found Token
	hit := 0
	for _, t := range tokens {
		if subtle.ConstantTimeCompare([]byte(t.Secret), []byte(secret)) == 1 {
			found = t
			hit = 1
		}
	}
	return found, hit == 1
}
