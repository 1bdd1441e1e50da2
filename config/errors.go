package config

import (
	"fmt"
	"strings"
)

// FieldError is one problem with one field of a configuration.
type FieldError struct {
	// File and Line locate the field in its source, when known.
	File string
	Line int
	// Path is the field path, e.g. "virtual_hosts[0].routes[2].match.path_regex".
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a configuration. It is returned as an
// error only when it is not empty.
type Errors []*FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// errs collects FieldErrors during validation.
type errs struct{ list Errors }

func (c *errs) add(path, format string, args ...any) {
	c.list = append(c.list, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (c *errs) err() error {
	if len(c.list) == 0 {
		return nil
	}
	return c.list
}

func idx(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }
func dot(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}
