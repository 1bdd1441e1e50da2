package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestReferenceDoc keeps docs/config.md honest: its full example parses,
// and it documents every field of the schema.
func TestReferenceDoc(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Skipf("no reference doc: %v", err)
	}
	text := string(doc)

	i := strings.Index(text, "## A full example")
	if i < 0 {
		t.Fatal("docs/config.md has no full example")
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(text[i:])
	if m == nil {
		t.Fatal("the full example has no yaml block")
	}
	if _, err := Parse([]byte(m[1]), "docs/config.md"); err != nil {
		t.Errorf("the full example does not parse:\n%v", err)
	}

	for _, name := range schemaFields(reflect.TypeOf(Config{}), map[reflect.Type]bool{}) {
		if !strings.Contains(text, "`"+name+"`") {
			t.Errorf("docs/config.md does not document the field `%s`: add it to the reference", name)
		}
	}
}

// schemaFields lists the YAML names of every field reachable from t.
func schemaFields(t reflect.Type, seen map[reflect.Type]bool) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return nil
	}
	seen[t] = true
	var names []string
	for name, f := range yamlFields(t) {
		names = append(names, name)
		names = append(names, schemaFields(f.Type, seen)...)
	}
	return names
}
