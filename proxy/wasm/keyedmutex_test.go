package wasm

import (
	"testing"
	"time"
)

// TestKeyedMutex: a key's holders take turns; another key is not held up.
func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	a, b := [32]byte{1}, [32]byte{2}
	unlockA := k.lock(a)
	second, secondDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(secondDone)
		unlock := k.lock(a)
		close(second)
		unlock()
	}()
	done := make(chan struct{})
	go func() {
		k.lock(b)()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("another key waited for a held one")
	}
	select {
	case <-second:
		t.Fatal("a key was taken twice at once")
	default:
	}
	unlockA()
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("the second holder was not let in after the unlock")
	}
	<-secondDone
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.held) != 0 {
		t.Errorf("%d keys left behind", len(k.held))
	}
}
