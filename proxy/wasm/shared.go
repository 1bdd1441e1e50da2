package wasm

import (
	"sync"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// sharedStore holds the data and queues that instances share. Like
// Envoy's, both are scoped by VM id: the plugin's vm_id, or its name when
// it has none. Every instance of a VM, the plugins that share it, and
// the plugins after a reload see the same keys and queues.
type sharedStore struct {
	mu     sync.Mutex
	data   map[string]map[string]*sharedValue
	queues map[string]*queue // by vm id + "\x00" + name
	byID   map[uint32]*queue
	nextQ  uint32
}

type sharedValue struct {
	value []byte
	cas   uint32
}

type queue struct {
	id    uint32
	items [][]byte
	subs  []queueSub
	next  int
}

// queueSub is a root context told when the queue gets an item.
type queueSub struct {
	in   *instance
	root uint32
}

// maxQueueItems bounds a queue nobody drains.
const maxQueueItems = 1 << 16

func newSharedStore() *sharedStore {
	return &sharedStore{
		data:   make(map[string]map[string]*sharedValue),
		queues: make(map[string]*queue),
		byID:   make(map[uint32]*queue),
	}
}

func hostGetSharedData(in *instance, a []uint64) abi.Status {
	key, ok := in.mem.Read(u32(a[0]), u32(a[1]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	st := in.vm.m.shared
	st.mu.Lock()
	v := st.data[in.vm.name][string(key)]
	if v == nil {
		st.mu.Unlock()
		return abi.StatusNotFound
	}
	in.scratch = append(in.scratch[:0], v.value...)
	cas := v.cas
	st.mu.Unlock()
	if s := in.copyOut(in.scratch, u32(a[2]), u32(a[3])); s != abi.StatusOK {
		return s
	}
	if !in.mem.WriteUint32Le(u32(a[4]), cas) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hostSetSharedData(in *instance, a []uint64) abi.Status {
	key, ok1 := in.mem.Read(u32(a[0]), u32(a[1]))
	val, ok2 := in.mem.Read(u32(a[2]), u32(a[3]))
	if !ok1 || !ok2 {
		return abi.StatusInvalidMemoryAccess
	}
	cas := u32(a[4])
	st := in.vm.m.shared
	st.mu.Lock()
	defer st.mu.Unlock()
	vm := st.data[in.vm.name]
	if vm == nil {
		vm = make(map[string]*sharedValue)
		st.data[in.vm.name] = vm
	}
	v := vm[string(key)]
	if v == nil {
		if cas != 0 {
			return abi.StatusCasMismatch
		}
		v = &sharedValue{}
		vm[string(key)] = v
	} else if cas != 0 && cas != v.cas {
		return abi.StatusCasMismatch
	}
	v.value = append(v.value[:0], val...)
	v.cas++
	if v.cas == 0 {
		v.cas = 1
	}
	return abi.StatusOK
}

func queueKey(vm, name []byte) string {
	return string(vm) + "\x00" + string(name)
}

func hostRegisterSharedQueue(in *instance, a []uint64) abi.Status {
	name, ok := in.mem.Read(u32(a[0]), u32(a[1]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	if in.curRoot == 0 {
		return abi.StatusBadArgument
	}
	st := in.vm.m.shared
	st.mu.Lock()
	k := queueKey([]byte(in.vm.name), name)
	q := st.queues[k]
	if q == nil {
		st.nextQ++
		q = &queue{id: st.nextQ}
		st.queues[k] = q
		st.byID[q.id] = q
	}
	sub := queueSub{in: in, root: in.curRoot}
	known := false
	for _, s := range q.subs {
		if s == sub {
			known = true
		}
	}
	if !known {
		q.subs = append(q.subs, sub)
	}
	id := q.id
	st.mu.Unlock()
	if !in.mem.WriteUint32Le(u32(a[2]), id) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hostResolveSharedQueue(in *instance, a []uint64) abi.Status {
	vm, ok1 := in.mem.Read(u32(a[0]), u32(a[1]))
	name, ok2 := in.mem.Read(u32(a[2]), u32(a[3]))
	if !ok1 || !ok2 {
		return abi.StatusInvalidMemoryAccess
	}
	if len(vm) == 0 {
		vm = []byte(in.vm.name)
	}
	st := in.vm.m.shared
	st.mu.Lock()
	q := st.queues[queueKey(vm, name)]
	st.mu.Unlock()
	if q == nil {
		return abi.StatusNotFound
	}
	if !in.mem.WriteUint32Le(u32(a[4]), q.id) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hostEnqueueSharedQueue(in *instance, a []uint64) abi.Status {
	val, ok := in.mem.Read(u32(a[1]), u32(a[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	st := in.vm.m.shared
	st.mu.Lock()
	q := st.byID[u32(a[0])]
	if q == nil {
		st.mu.Unlock()
		return abi.StatusNotFound
	}
	if len(q.items) >= maxQueueItems {
		st.mu.Unlock()
		return abi.StatusInternalFailure
	}
	q.items = append(q.items, append([]byte(nil), val...))
	var sub queueSub
	if len(q.subs) > 0 {
		q.next = (q.next + 1) % len(q.subs)
		sub = q.subs[q.next]
	}
	st.mu.Unlock()
	if sub.in != nil {
		go sub.in.queueReady(sub.root, q.id)
	}
	return abi.StatusOK
}

func hostDequeueSharedQueue(in *instance, a []uint64) abi.Status {
	st := in.vm.m.shared
	st.mu.Lock()
	q := st.byID[u32(a[0])]
	if q == nil {
		st.mu.Unlock()
		return abi.StatusNotFound
	}
	if len(q.items) == 0 {
		st.mu.Unlock()
		return abi.StatusEmpty
	}
	item := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	st.mu.Unlock()
	return in.copyOut(item, u32(a[1]), u32(a[2]))
}

// queueReady tells a root context that its queue has an item.
func (in *instance) queueReady(root, id uint32) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.broken {
		return
	}
	in.enterRoot(root)
	_, err := in.invoke(in.fn.queueReady, uint64(root), uint64(id))
	in.leave()
	if err != nil {
		in.vm.failed(in, err)
	}
}

// dropInstance forgets the queue subscriptions of a discarded instance.
func (st *sharedStore) dropInstance(in *instance) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, q := range st.queues {
		kept := q.subs[:0]
		for _, s := range q.subs {
			if s.in != in {
				kept = append(kept, s)
			}
		}
		for i := len(kept); i < len(q.subs); i++ {
			q.subs[i] = queueSub{}
		}
		q.subs = kept
		q.next = 0
	}
}

// dropRoot forgets the queue subscriptions of a deleted root context.
// Data and queued items stay for the plugin that replaces it.
func (st *sharedStore) dropRoot(in *instance, root uint32) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, q := range st.queues {
		kept := q.subs[:0]
		for _, s := range q.subs {
			if s.in != in || s.root != root {
				kept = append(kept, s)
			}
		}
		for i := len(kept); i < len(q.subs); i++ {
			q.subs[i] = queueSub{}
		}
		q.subs = kept
		q.next = 0
	}
}
