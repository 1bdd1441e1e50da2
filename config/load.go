package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
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

// Parse decodes, defaults and validates a YAML or JSON document. Decoding
// is strict: an unknown field is an error. Every error is a *FieldError
// inside an Errors, naming the field path and, where the source gives it,
// the file and line. name labels errors and may be empty.
func Parse(data []byte, name string) (*Config, error) {
	cfg, lines, err := decode(data, name)
	if err != nil {
		return nil, err
	}
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		var list Errors
		if errors.As(err, &list) {
			for _, fe := range list {
				fe.File = name
				fe.Line = lines.lookup(fe.Path)
			}
		}
		return nil, err
	}
	return cfg, nil
}

// Decode decodes a YAML or JSON document as strictly as Parse, with the
// same errors, but neither defaults nor validates it: for partial
// documents, such as one resource or a bundle that completes a stored
// configuration.
func Decode(data []byte, name string) (*Config, error) {
	cfg, _, err := decode(data, name)
	if err != nil {
		return nil, err
	}
	return cfg, nil
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

func decode(data []byte, name string) (*Config, lineMap, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, Errors{{File: name, Msg: "the document is empty"}}
		}
		return nil, nil, Errors{yamlError(name, err)}
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, Errors{yamlError(name, err)}
		}
		if len(next.Content) == 1 && next.Content[0].Tag == "!!null" {
			continue // an empty document after "---"
		}
		return nil, nil, Errors{{File: name, Line: next.Line, Msg: "a config is one YAML document; found a second"}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, nil, Errors{{File: name, Line: root.Line, Msg: "the document must be a mapping of top-level fields (listeners, virtual_hosts, clusters, ...)"}}
	}
	w := &walker{file: name, lines: lineMap{}, budget: 8*len(data) + 100000}
	w.walk(root, reflect.TypeOf(Config{}), "")
	if len(w.list) > 0 {
		return nil, nil, w.list
	}
	cfg := &Config{}
	if err := root.Decode(cfg); err != nil {
		return nil, nil, Errors{yamlError(name, err)}
	}
	return cfg, w.lines, nil
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
	// budget bounds the nodes visited, so that aliases nested in aliases
	// cannot make the walk exponential in the size of the document.
	budget int
}

func (w *walker) add(n *yaml.Node, path, msg string) {
	w.list = append(w.list, &FieldError{File: w.file, Line: n.Line, Path: path, Msg: msg})
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
				w.add(k, p, "unknown field"+suggest(k.Value, fields))
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

// suggest names the known field closest to a misspelt one.
func suggest(got string, fields map[string]reflect.StructField) string {
	best, bestD := "", 3
	for name := range fields {
		if d := editDistance(got, name); d < bestD || (d == bestD && best != "" && name < best) {
			best, bestD = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
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
