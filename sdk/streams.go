package sdk

// streamTable holds the open requests of the instance by context id.
//
// Hosts number contexts in sequence and an instance has few requests open
// at once, so a direct-mapped array indexed by the low bits of the id
// holds nearly all of them, and the rare collision goes to a map. Finding,
// adding and removing a request then costs no call into the runtime and
// no loop, which matters in a guest: a host that can interrupt a looping
// module may check every loop iteration, and a map operation is several
// calls with loops of their own.
type streamTable struct {
	slots [streamSlots]*Request
	more  map[uint32]*Request
	n     int
}

const streamSlots = 512

func (t *streamTable) get(id uint32) *Request {
	if r := t.slots[id%streamSlots]; r != nil && r.id == id {
		return r
	}
	if len(t.more) == 0 {
		return nil
	}
	return t.more[id]
}

// put adds r, replacing a request of the same id.
func (t *streamTable) put(r *Request) {
	t.del(r.id)
	s := &t.slots[r.id%streamSlots]
	if *s == nil {
		*s = r
	} else {
		if t.more == nil {
			t.more = make(map[uint32]*Request)
		}
		t.more[r.id] = r
	}
	t.n++
}

// del removes the request of id and returns it, or nil.
func (t *streamTable) del(id uint32) *Request {
	s := &t.slots[id%streamSlots]
	if r := *s; r != nil && r.id == id {
		*s = nil
		t.n--
		return r
	}
	if len(t.more) == 0 {
		return nil
	}
	r := t.more[id]
	if r != nil {
		delete(t.more, id)
		t.n--
	}
	return r
}

// len returns the number of requests held.
func (t *streamTable) len() int { return t.n }
