package sdk

import (
	"encoding/binary"
	"strings"
)

// Field is one header or trailer: a name and a value, written
// Field{"content-type", "text/plain"}. Names are lower-case on the wire;
// pseudo-headers (":method", ":path", ":authority", ":scheme",
// ":status") are fields like any other.
type Field [2]string

// Name returns the field's name.
func (f Field) Name() string { return f[0] }

// Value returns the field's value.
func (f Field) Value() string { return f[1] }

// Fields is an ordered list of header fields held by the plugin: the
// headers of a local response or an HTTP call, or a copy of the request's
// headers. Lookups ignore the case of names. The zero value is empty and
// ready to use.
type Fields []Field

// Get returns the first value of name, or "".
func (f Fields) Get(name string) string {
	v, _ := f.Lookup(name)
	return v
}

// Lookup returns the first value of name and whether there is one.
func (f Fields) Lookup(name string) (string, bool) {
	for _, e := range f {
		if strings.EqualFold(e[0], name) {
			return e[1], true
		}
	}
	return "", false
}

// Values returns every value of name, in order.
func (f Fields) Values(name string) []string {
	var vs []string
	for _, e := range f {
		if strings.EqualFold(e[0], name) {
			vs = append(vs, e[1])
		}
	}
	return vs
}

// Add appends a field.
func (f *Fields) Add(name, value string) { *f = append(*f, Field{name, value}) }

// Set replaces every value of name with value, keeping the position of
// the first.
func (f *Fields) Set(name, value string) {
	for i, e := range *f {
		if strings.EqualFold(e[0], name) {
			(*f)[i][1] = value
			f.del(name, i+1)
			return
		}
	}
	f.Add(name, value)
}

// Del removes every value of name.
func (f *Fields) Del(name string) { f.del(name, 0) }

func (f *Fields) del(name string, from int) {
	out := (*f)[:from]
	for _, e := range (*f)[from:] {
		if !strings.EqualFold(e[0], name) {
			out = append(out, e)
		}
	}
	clear((*f)[len(out):])
	*f = out
}

// encodeFields writes f in the ABI's map format: the number of fields,
// each field's name and value lengths, then each name and value followed
// by a NUL. An empty list encodes as no bytes.
func encodeFields(f Fields) []byte {
	if len(f) == 0 {
		return nil
	}
	n := 4 + 8*len(f)
	for _, e := range f {
		n += len(e[0]) + len(e[1]) + 2
	}
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
	for _, e := range f {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e[0])))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e[1])))
	}
	for _, e := range f {
		b = append(b, e[0]...)
		b = append(b, 0)
		b = append(b, e[1]...)
		b = append(b, 0)
	}
	return b
}

// decodeFields parses the ABI's map format. It returns ErrParse when the
// bytes do not add up. The strings share one copy of b.
func decodeFields(b []byte) (Fields, error) {
	if len(b) < 4 {
		return nil, nil
	}
	n := uint64(binary.LittleEndian.Uint32(b))
	if 4+8*n > uint64(len(b)) {
		return nil, ErrParse
	}
	s := string(b)
	f := make(Fields, 0, n)
	off := 4 + 8*n
	for i := uint64(0); i < n; i++ {
		kl := uint64(binary.LittleEndian.Uint32(b[4+8*i:]))
		vl := uint64(binary.LittleEndian.Uint32(b[8+8*i:]))
		if off+kl+vl+2 > uint64(len(b)) {
			return nil, ErrParse
		}
		k := s[off : off+kl]
		off += kl + 1
		v := s[off : off+vl]
		off += vl + 1
		f = append(f, Field{k, v})
	}
	return f, nil
}
