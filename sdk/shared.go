package sdk

import "time"

// SharedData is a key-value store that every instance of the plugin
// shares (the host scopes it by VM id), with compare-and-swap versions:
// a read returns the value's version (cas), and a write with a non-zero
// cas fails with ErrCASMismatch when someone wrote in between.
var SharedData sharedData

type sharedData struct{}

// Get returns the value of key and its version. A missing key is
// ErrNotFound.
func (sharedData) Get(key string) (value []byte, cas uint32, err error) {
	v, cas, st := hostGetSharedData(key)
	return v, cas, check("proxy_get_shared_data", st)
}

// Set writes the value of key. With cas 0 it writes unconditionally.
func (sharedData) Set(key string, value []byte, cas uint32) error {
	return check("proxy_set_shared_data", hostSetSharedData(key, value, cas))
}

// Queue is a shared queue of byte messages between instances, and
// between plugins of one VM id.
type Queue struct{ id uint32 }

// RegisterQueue creates (or joins) the queue called name, owned by the
// current configuration: onReady runs in this root context whenever an
// item is enqueued. Call it from Register's function, a tick or another
// root callback.
func RegisterQueue(name string, onReady func(Queue)) (Queue, error) {
	root := curRoot
	if root == nil {
		return Queue{}, errNoRoot
	}
	id, st := hostRegisterQueue(name)
	if err := check("proxy_register_shared_queue", st); err != nil {
		return Queue{}, err
	}
	q := Queue{id}
	if onReady != nil {
		if root.queues == nil {
			root.queues = map[uint32]func(){}
		}
		root.queues[id] = func() { onReady(q) }
	}
	return q, nil
}

// ResolveQueue finds a queue another root context registered. vmID ""
// means this plugin's.
func ResolveQueue(vmID, name string) (Queue, error) {
	id, st := hostResolveQueue(vmID, name)
	return Queue{id}, check("proxy_resolve_shared_queue", st)
}

// Enqueue adds an item.
func (q Queue) Enqueue(item []byte) error {
	return check("proxy_enqueue_shared_queue", hostEnqueue(q.id, item))
}

// Dequeue removes and returns the oldest item; ErrEmpty when there is
// none.
func (q Queue) Dequeue() ([]byte, error) {
	b, st := hostDequeue(q.id)
	return b, check("proxy_dequeue_shared_queue", st)
}

// Tick runs fn every period in the current root context (one per
// configuration per instance). A period of 0 stops it; calling Tick again
// replaces fn and the period. Call it from Register's function.
func Tick(period time.Duration, fn func()) error {
	root := curRoot
	if root == nil {
		return errNoRoot
	}
	ms := period.Milliseconds()
	if period > 0 && ms == 0 {
		ms = 1
	}
	root.tick = fn
	if period <= 0 {
		root.tick = nil
	}
	return check("proxy_set_tick_period_milliseconds", hostSetTickPeriod(uint32(ms)))
}

// Now returns the host's clock.
func Now() time.Time { return time.Unix(0, hostNow()) }
