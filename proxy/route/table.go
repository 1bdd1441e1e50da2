package route

import (
	"sort"
	"strings"

	"github.com/wasmgate/wasmgate/proxy/filter/native"
)

// Table finds the virtual host for a Host header: an exact domain first,
// then the longest "*suffix" wildcard, then the longest "prefix*" wildcard,
// then "*".
type Table struct {
	exact  map[string]*VirtualHost
	suffix map[string]*VirtualHost
	prefix map[string]*VirtualHost
	// suffixLens and prefixLens are the distinct wildcard lengths, longest
	// first, so a lookup tries only lengths that exist.
	suffixLens []int
	prefixLens []int
	any        *VirtualHost
	// VirtualHosts are all virtual hosts of the table, in config order.
	VirtualHosts []*VirtualHost
	// forwarded is the listener's forwarding filter, shared by its routes.
	forwarded *native.Forwarded
}

func newTable() *Table {
	return &Table{exact: map[string]*VirtualHost{}, suffix: map[string]*VirtualHost{}, prefix: map[string]*VirtualHost{}}
}

func (t *Table) add(domain string, vh *VirtualHost) {
	switch {
	case domain == "*":
		t.any = vh
	case strings.HasPrefix(domain, "*"):
		s := domain[1:]
		t.suffix[s] = vh
		t.suffixLens = insertLen(t.suffixLens, len(s))
	case strings.HasSuffix(domain, "*"):
		p := domain[:len(domain)-1]
		t.prefix[p] = vh
		t.prefixLens = insertLen(t.prefixLens, len(p))
	default:
		t.exact[domain] = vh
	}
}

func insertLen(lens []int, n int) []int {
	for _, l := range lens {
		if l == n {
			return lens
		}
	}
	lens = append(lens, n)
	sort.Sort(sort.Reverse(sort.IntSlice(lens)))
	return lens
}

// CatchAll returns the virtual host of domain "*", or nil.
func (t *Table) CatchAll() *VirtualHost { return t.any }

// maxHost bounds the host names the table lowercases on the stack; longer
// Host headers only match "*".
const maxHost = 255

// Find returns the virtual host for a Host header value, or nil. It does
// not allocate.
func (t *Table) Find(host []byte) *VirtualHost {
	host = stripPort(host)
	if len(host) > maxHost {
		return t.any
	}
	var buf [maxHost]byte
	h := buf[:len(host)]
	for i, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h[i] = c
	}
	if len(h) > 0 && h[len(h)-1] == '.' {
		h = h[:len(h)-1] // a fully qualified name
	}
	if vh, ok := t.exact[string(h)]; ok {
		return vh
	}
	for _, n := range t.suffixLens {
		// A wildcard matches at least one character.
		if n < len(h) {
			if vh, ok := t.suffix[string(h[len(h)-n:])]; ok {
				return vh
			}
		}
	}
	for _, n := range t.prefixLens {
		if n < len(h) {
			if vh, ok := t.prefix[string(h[:n])]; ok {
				return vh
			}
		}
	}
	return t.any
}
