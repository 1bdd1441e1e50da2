package filter

import (
	"bytes"
	"testing"
)

func TestFilterStateAcrossRequests(t *testing.T) {
	x := NewExchange()
	src := []byte("one")
	x.SetState("a", src)
	src[0] = 'X' // the caller's buffer is its own again
	x.SetState("b", bytes.Repeat([]byte("b"), 100))
	a := x.FilterState["a"]
	if string(a) != "one" {
		t.Fatalf("a = %q, want the value as set", a)
	}
	// A filter appending to a value it read must not write over the next.
	_ = append(a, "!!!"...)
	if got := x.FilterState["b"]; !bytes.Equal(got, bytes.Repeat([]byte("b"), 100)) {
		t.Fatalf("b = %q after an append to a", got)
	}

	x.Reset()
	if len(x.FilterState) != 0 {
		t.Fatalf("after Reset, state %v, want none", x.FilterState)
	}
	x.SetState("c", []byte("three"))
	if _, ok := x.FilterState["a"]; ok {
		t.Fatal("the last request's state is still there")
	}
	if string(x.FilterState["c"]) != "three" {
		t.Fatalf("c = %q", x.FilterState["c"])
	}

	// Much state is not kept for the next request.
	x.SetState("big", make([]byte, maxKeptState+1))
	x.Reset()
	if cap(x.stateBuf) != 0 {
		t.Fatalf("kept %d bytes of state room, want none over %d", cap(x.stateBuf), maxKeptState)
	}
}
