package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// ErrNotFound is returned for a resource, a blob or a history entry that
// does not exist.
var ErrNotFound = errors.New("not found")

// NotFoundError names what was not found; it matches ErrNotFound.
type NotFoundError struct{ What string }

func (e *NotFoundError) Error() string   { return e.What + " not found" }
func (e *NotFoundError) Is(t error) bool { return t == ErrNotFound }

// Conflict is one precondition of a change that no longer holds.
type Conflict struct {
	// Resource is "kind/name".
	Resource string `json:"resource"`
	// Expected is the revision the writer worked from; Current is the
	// resource's mod revision now (0: it does not exist).
	Expected int64  `json:"expected_revision"`
	Current  int64  `json:"current_revision"`
	Reason   string `json:"reason"`
}

// ConflictError says that a writer worked from a stale revision: someone
// else changed what it meant to change. Nothing was written.
type ConflictError struct{ Conflicts []Conflict }

func (e *ConflictError) Error() string {
	parts := make([]string, len(e.Conflicts))
	for i, c := range e.Conflicts {
		parts[i] = fmt.Sprintf("%s: %s", c.Resource, c.Reason)
	}
	return "conflict: " + strings.Join(parts, "; ")
}

// Referenced is a resource that a change removes while others still name it.
type Referenced struct {
	Resource string `json:"resource"`
	// By lists each place that names it: "virtual_hosts/web routes[2].cluster".
	By []string `json:"referenced_by"`
}

// ReferencedError refuses a deletion of resources that are still in use.
type ReferencedError struct{ Refs []Referenced }

func (e *ReferencedError) Error() string {
	parts := make([]string, len(e.Refs))
	for i, r := range e.Refs {
		parts[i] = fmt.Sprintf("%s is still referenced by %s", r.Resource, strings.Join(r.By, ", "))
	}
	return strings.Join(parts, "; ")
}

// FieldError is a problem with one field of the configuration a change
// would produce.
type FieldError struct {
	// Resource is "kind/name", or empty for a problem with the whole
	// configuration (for example, no listener at all).
	Resource string `json:"resource,omitempty"`
	// Path is the field path inside the resource ("routes[0].cluster"),
	// or inside the configuration when Resource is empty.
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

func (e FieldError) String() string {
	var b strings.Builder
	if e.Resource != "" {
		b.WriteString(e.Resource)
		if e.Path != "" {
			b.WriteString(" ")
		}
	}
	b.WriteString(e.Path)
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// ValidationError says that the configuration a change would produce is
// invalid. Nothing was written.
type ValidationError struct{ Errors []FieldError }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		parts[i] = fe.String()
	}
	return "invalid configuration: " + strings.Join(parts, "; ")
}

var indexed = regexp.MustCompile(`\b(listeners|virtual_hosts|clusters|plugins)\[(\d+)\]`)

// indexedPath is indexed at the start of a field path, where a top-level
// certificate is also named ("certificates" inside a message may be a
// listener's tls.certificates).
var indexedPath = regexp.MustCompile(`^(listeners|virtual_hosts|clusters|plugins|certificates)\[(\d+)\]`)

// fieldErrors turns the errors of an assembled configuration into errors
// that name resources: order names the resources of the assembled
// configuration by kind and index.
func fieldErrors(err error, order map[resource.Kind][]string) *ValidationError {
	var list config.Errors
	if !errors.As(err, &list) {
		return &ValidationError{Errors: []FieldError{{Message: err.Error()}}}
	}
	name := func(kind string, i string) (string, bool) {
		n, _ := strconv.Atoi(i)
		names := order[resource.Kind(kind)]
		if n < 0 || n >= len(names) {
			return "", false
		}
		return names[n], true
	}
	out := &ValidationError{}
	for _, fe := range list {
		e := FieldError{Path: fe.Path, Message: fe.Msg}
		if m := indexedPath.FindStringSubmatchIndex(fe.Path); m != nil {
			kind, i := fe.Path[m[2]:m[3]], fe.Path[m[4]:m[5]]
			if n, ok := name(kind, i); ok {
				e.Resource = kind + "/" + n
				e.Path = strings.TrimPrefix(fe.Path[m[1]:], ".")
			}
		}
		e.Message = indexed.ReplaceAllStringFunc(e.Message, func(s string) string {
			m := indexed.FindStringSubmatch(s)
			if n, ok := name(m[1], m[2]); ok {
				return m[1] + "/" + n
			}
			return s
		})
		out.Errors = append(out.Errors, e)
	}
	return out
}

// meshErrors names the problems resource.Check found, in resource order.
func meshErrors(next resource.Set, bad map[resource.Ref]config.Errors) *ValidationError {
	out := &ValidationError{}
	for _, r := range next.Refs() {
		for _, fe := range bad[r] {
			out.Errors = append(out.Errors, FieldError{Resource: r.String(), Path: fe.Path, Message: fe.Msg})
		}
	}
	return out
}

// Transient reports whether err is etcd being briefly unavailable (no
// leader, a leader change, a lost connection, a timeout): the request may
// succeed if tried again.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var coded interface{ Code() codes.Code }
	if errors.As(err, &coded) {
		switch coded.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		}
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		switch se.GRPCStatus().Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		}
	}
	return false
}
