package wasm

import "sync"

// keyedMutex is a mutex per module digest. Compilations of the same bytes
// take it in turn: wazero (v1.12.0) puts a module it loads from the file
// cache where the other runtimes sharing the cache find it before it has
// built the module's entry preambles, so a second runtime compiling the
// same bytes at that moment gets the module and may instantiate and call
// it half made. Compilations of other modules go on meanwhile.
type keyedMutex struct {
	mu   sync.Mutex
	held map[[32]byte]*keyedEntry
}

type keyedEntry struct {
	mu      sync.Mutex
	waiters int // holders and waiters; the entry goes at zero
}

// lock takes key's mutex and returns its unlock.
func (k *keyedMutex) lock(key [32]byte) (unlock func()) {
	k.mu.Lock()
	if k.held == nil {
		k.held = map[[32]byte]*keyedEntry{}
	}
	e := k.held[key]
	if e == nil {
		e = &keyedEntry{}
		k.held[key] = e
	}
	e.waiters++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.waiters--; e.waiters == 0 {
			delete(k.held, key)
		}
		k.mu.Unlock()
	}
}
