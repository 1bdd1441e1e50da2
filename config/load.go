package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// LoadFile reads, decodes, defaults and validates a YAML or JSON file.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(data, path)
}

// ValidateFile reads a YAML or JSON file and reports every problem with
// it at once, as an Errors in line order: what does not decode, what does
// not validate, and what the proxy could not load from this machine's disk
// (see CheckFiles). It is what `wasmgate validate` runs.
func ValidateFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	doc := DecodeDocument(data, path)
	if doc.Config == nil {
		return doc.Errors
	}
	doc.Config.Normalize()
	found := append(errorList(doc.Config.Validate()), errorList(doc.Config.CheckFiles())...)
	if list := doc.Report(found); len(list) > 0 {
		return list
	}
	return nil
}

// Parse decodes, defaults and validates a YAML or JSON document. Decoding
// is strict: an unknown field is an error. Every error is a *FieldError
// inside an Errors, naming the field path and, where the source gives it,
// the file and line. All of them are reported at once: a field that does
// not decode does not stop the validation of the others. name labels
// errors and may be empty.
func Parse(data []byte, name string) (*Config, error) {
	doc := DecodeDocument(data, name)
	if list := doc.Check(); len(list) > 0 {
		return nil, list
	}
	return doc.Config, nil
}

// Decode decodes a YAML or JSON document as strictly as Parse, with the
// same errors, but neither defaults nor validates it: for partial
// documents, such as one resource or a bundle that completes a stored
// configuration.
func Decode(data []byte, name string) (*Config, error) {
	doc := DecodeDocument(data, name)
	if len(doc.Errors) > 0 {
		return nil, doc.Errors
	}
	return doc.Config, nil
}

// Document is a YAML or JSON configuration document as decoded: the part
// of it that decodes, an error for each part that does not, and the line
// each field starts on. It is the one decoder of configuration documents:
// the file loader, `wasmgate validate`, `wasmgate ctl` and the control
// plane's API all decode with it, so they report a problem in the same
// words.
type Document struct {
	// Name labels errors: the file the document was read from, or the
	// name a client gave it. It may be empty.
	Name string
	// Config holds every field that decoded; a field that did not is left
	// at its zero value. It is nil when the document as a whole is
	// unusable: not YAML, empty, more than one document, or not a mapping.
	Config *Config
	// Errors are the decode errors, in document order.
	Errors Errors

	lines lineMap
	// covered are the paths that decode errors stand for: a validation
	// error at or under one of them repeats a decode error. A validation
	// error at (not under) one of incomplete, a mapping with an unknown
	// field, is likely to be about the field that the writer misspelt.
	covered, incomplete []string
}

// DecodeDocument decodes data strictly into a Config, going on past the
// fields that do not decode so that every such field is reported. It
// never returns nil.
func DecodeDocument(data []byte, name string) *Document {
	doc := &Document{Name: name}
	cfg := &Config{}
	w, ok := decodeInto(data, name, cfg, "the document must be a mapping of top-level fields (listeners, virtual_hosts, clusters, ...)")
	doc.Errors, doc.lines, doc.covered, doc.incomplete = w.list, w.lines, w.covered, w.incomplete
	if ok {
		doc.Config = cfg
	}
	return doc
}

// DecodeValue decodes a YAML or JSON document into v, a pointer to a
// struct, by the rules of DecodeDocument and with its errors. It is for
// documents of one part of a configuration, such as one resource. Fields
// that do not decode are set to their zero value; the error, when not
// nil, is an Errors.
func DecodeValue(data []byte, name string, v any) error {
	w, _ := decodeInto(data, name, v, "the document must be a mapping of fields")
	if len(w.list) > 0 {
		return w.list
	}
	return nil
}

// Line returns the line on which path, or its nearest ancestor in the
// document, starts; 0 when the document has neither.
func (d *Document) Line(path string) int { return d.lines.lookup(path) }

// Check defaults and validates the configuration that decoded, and
// returns its report (see Report): every problem with the document, or
// an empty Errors.
func (d *Document) Check() Errors {
	if d.Config == nil {
		return d.Errors
	}
	d.Config.Normalize()
	return d.Report(errorList(d.Config.Validate()))
}

// Report returns the decode errors together with found, problems that
// validating the decoded configuration found, as one list in line order.
// Each of found is given the document's name, and the line of its path
// when it has none. Those at or under a field that did not decode are
// left out, since they only repeat its error: a misspelt required field
// is reported as misspelt, not also as missing. So are those about a
// whole mapping with a misspelt field: a route with "clustr" is reported
// as misspelt, not also as a route without an action.
func (d *Document) Report(found Errors) Errors {
	list := append(Errors(nil), d.Errors...)
	for _, fe := range found {
		if d.covers(fe.Path) {
			continue
		}
		fe.File = d.Name
		if fe.Line == 0 {
			fe.Line = d.Line(fe.Path)
		}
		list = append(list, fe)
	}
	slices.SortStableFunc(list, func(a, b *FieldError) int { return a.Line - b.Line })
	return list
}

func (d *Document) covers(path string) bool {
	if slices.Contains(d.incomplete, path) {
		return true
	}
	for _, c := range d.covered {
		if path == c || strings.HasPrefix(path, c) && (path[len(c)] == '.' || path[len(c)] == '[') {
			return true
		}
	}
	return false
}

// errorList returns the FieldErrors of an error returned by Validate or
// CheckFiles.
func errorList(err error) Errors {
	if err == nil {
		return nil
	}
	var list Errors
	if errors.As(err, &list) {
		return list
	}
	return Errors{{Msg: err.Error()}}
}

// lineMap maps field paths to the line they start on.
type lineMap map[string]int

// lookup returns the line of path or of its nearest ancestor that has one.
func (m lineMap) lookup(path string) int {
	for path != "" {
		if l, ok := m[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// decodeInto decodes one YAML or JSON document into v. The walker it
// returns holds the errors and the line of every field; ok is false when
// nothing could be decoded.
func decodeInto(data []byte, name string, v any, notMapping string) (w *walker, ok bool) {
	w = &walker{file: name, lines: lineMap{}, budget: 8*len(data) + 100000}
	fail := func(fe *FieldError) (*walker, bool) {
		w.list = append(w.list, fe)
		return w, false
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return fail(&FieldError{File: name, Msg: "the document is empty"})
		}
		return fail(yamlError(name, err))
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(yamlError(name, err))
		}
		if len(next.Content) == 1 && next.Content[0].Tag == "!!null" {
			continue // an empty document after "---"
		}
		return fail(&FieldError{File: name, Line: next.Line, Msg: "a config is one YAML document; found a second"})
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return fail(&FieldError{File: name, Line: root.Line, Msg: notMapping})
	}
	w.walk(root, reflect.TypeOf(v), "")
	if w.budget <= 0 {
		return w, false
	}
	// The walk replaced every field that does not decode with null, so
	// what remains decodes.
	if err := root.Decode(v); err != nil {
		return fail(yamlError(name, err))
	}
	return w, true
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// yamlError turns a yaml.v3 error into a FieldError with its line.
func yamlError(name string, err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	fe := &FieldError{File: name}
	if m := yamlLine.FindStringSubmatchIndex(msg); m != nil {
		fe.Line, _ = strconv.Atoi(msg[m[2]:m[3]])
		msg = msg[:m[0]] + msg[m[1]:]
	}
	fe.Msg = strings.ReplaceAll(msg, "\n  ", "; ")
	return fe
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// walker checks a document against the schema before it is decoded.
type walker struct {
	file  string
	lines lineMap
	list  Errors
	// covered are the paths of the fields that did not decode, and the
	// fields that a misspelt key most likely meant; incomplete are the
	// mappings that hold a misspelt key.
	covered, incomplete []string
	// budget bounds the nodes visited, so that aliases nested in aliases
	// cannot make the walk exponential in the size of the document.
	budget int
}

func (w *walker) add(n *yaml.Node, path, msg string) {
	w.list = append(w.list, &FieldError{File: w.file, Line: n.Line, Path: path, Msg: msg})
}

// drop records that n, at path, does not decode into type t, and
// replaces it with the zero value of t, so that the rest of the document
// decodes without it and the items of a list keep their indices.
func (w *walker) drop(n *yaml.Node, t reflect.Type, path string) {
	w.covered = append(w.covered, path)
	line, col := n.Line, n.Column
	var zero yaml.Node
	if err := zero.Encode(reflect.Zero(t).Interface()); err != nil {
		zero = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	zero.Line, zero.Column = line, col
	*n = zero
}

// walk checks n against type t: every mapping key must be a field, and
// records the line of every field path. It stops at types that decode
// themselves.
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if w.budget <= 0 {
		return
	}
	w.budget--
	if w.budget == 0 {
		w.add(n, path, "the document expands too many aliases")
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	declared := t
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		w.leaf(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			if n.Tag == "!!null" {
				return
			}
			w.add(n, path, fmt.Sprintf("must be a mapping, not %s", kindName(n)))
			w.drop(n, declared, path)
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" {
				w.merge(v, t, path)
				continue
			}
			p := dot(path, k.Value)
			w.lines[p] = k.Line
			f, ok := fields[k.Value]
			if !ok {
				meant := suggest(k.Value, fields)
				w.covered = append(w.covered, p)
				w.incomplete = append(w.incomplete, path)
				msg := "unknown field"
				if meant != "" {
					w.covered = append(w.covered, dot(path, meant))
					msg += fmt.Sprintf(" (did you mean %q?)", meant)
				}
				w.add(k, p, msg)
				continue
			}
			w.walk(v, f.Type, p)
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return
		}
		if n.Kind != yaml.SequenceNode {
			if n.Tag == "!!null" {
				return
			}
			w.add(n, path, fmt.Sprintf("must be a list, not %s", kindName(n)))
			w.drop(n, declared, path)
			return
		}
		for i, c := range n.Content {
			p := idx(path, i)
			w.lines[p] = c.Line
			w.walk(c, t.Elem(), p)
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				w.lines[dot(path, n.Content[i].Value)] = n.Content[i].Line
			}
		}
		w.leaf(n, t, path)
	default:
		w.leaf(n, t, path)
	}
}

// merge checks the mappings merged by a "<<" key against the type they are
// merged into. Their fields keep the line of the mapping that merges them.
func (w *walker) merge(n *yaml.Node, t reflect.Type, path string) {
	saved := w.lines
	w.lines = lineMap{}
	defer func() { w.lines = saved }()
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.SequenceNode {
		w.walk(n, t, path)
		return
	}
	for _, c := range n.Content {
		w.walk(c, t, path)
	}
}

// leaf decodes n into a throwaway value of type t, so that a type error
// names its field path as well as its line.
func (w *walker) leaf(n *yaml.Node, t reflect.Type, path string) {
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		fe := yamlError(w.file, err)
		fe.Path = path
		if fe.Line == 0 {
			fe.Line = n.Line
		}
		w.list = append(w.list, fe)
		w.drop(n, t, path)
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("the value %q", n.Value)
	}
}

func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "-" || !f.IsExported() {
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		m[tag] = f
	}
	return m
}

// suggest returns the known field closest to a misspelt one, or "".
func suggest(got string, fields map[string]reflect.StructField) string {
	best, bestD := "", 3
	for name := range fields {
		if d := editDistance(got, name); d < bestD || (d == bestD && best != "" && name < best) {
			best, bestD = name, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
