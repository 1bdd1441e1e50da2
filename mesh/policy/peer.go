package policy

import (
	"cmp"
	"slices"
	"strings"
)

// Modes is a compiled set of peer authentications. It is immutable and
// safe for concurrent use.
type Modes struct {
	list []PeerAuthentication
}

// CompileModes validates peer authentications and compiles them. They are
// copied.
func CompileModes(pas []PeerAuthentication) (*Modes, error) {
	m := &Modes{}
	var errs []string
	for _, p := range pas {
		p.PortLevel = clonePorts(p.PortLevel)
		p.Normalize()
		if err := p.Validate(); err != nil {
			errs = append(errs, "peer authentication "+strings.TrimSpace(p.Name)+": "+err.Error())
			continue
		}
		m.list = append(m.list, p)
	}
	if len(errs) > 0 {
		return nil, errorList(errs)
	}
	// At one scope the first by name wins.
	slices.SortFunc(m.list, func(a, b PeerAuthentication) int { return cmp.Compare(a.Name, b.Name) })
	return m, nil
}

type errorList []string

func (e errorList) Error() string { return strings.Join(e, "\n") }

func clonePorts(m map[int]Mode) map[int]Mode {
	if m == nil {
		return nil
	}
	out := make(map[int]Mode, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Resolution is a mode and the peer authentication that set it ("" for
// DefaultMode).
type Resolution struct {
	Mode   Mode
	Source string
}

// For returns the mode of one inbound port of a service: the service's
// port-level mode, else the service's mode, else its namespace's, else the
// mesh's (RootNamespace), else DefaultMode.
func (m *Modes) For(namespace, service string, port int) Resolution {
	find := func(ns, svc string) *PeerAuthentication {
		for i := range m.list {
			if p := &m.list[i]; p.Namespace == ns && p.Service == svc {
				return p
			}
		}
		return nil
	}
	if p := find(namespace, service); p != nil && service != "" {
		if mode, ok := p.PortLevel[port]; ok {
			return Resolution{mode, p.Name}
		}
		if p.Mode != "" {
			return Resolution{p.Mode, p.Name}
		}
	}
	if p := find(namespace, ""); p != nil && p.Mode != "" {
		return Resolution{p.Mode, p.Name}
	}
	if p := find(RootNamespace, ""); p != nil && p.Mode != "" {
		return Resolution{p.Mode, p.Name}
	}
	return Resolution{Mode: DefaultMode}
}

func sortedPorts(m map[int]Mode) []int {
	out := make([]int, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
