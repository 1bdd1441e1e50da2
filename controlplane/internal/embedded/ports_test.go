package embedded

import (
	"errors"
	"net"
	"testing"
)

// A bind to a port another socket holds is what Start picks again for,
// and only for addresses whose port was left to it.
func TestPickAgainWhenTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = net.Listen("tcp", l.Addr().String())
	if err == nil || !inUse(err) {
		t.Fatalf("a second bind of %s: %v; want address already in use", l.Addr(), err)
	}
	if inUse(errors.New("permission denied")) {
		t.Fatal("another error taken for a port in use")
	}
	for addr, want := range map[string]bool{"": true, "127.0.0.1:0": true, "127.0.0.1:2379": false} {
		if got := picksPort(addr); got != want {
			t.Errorf("picksPort(%q) = %v, want %v", addr, got, want)
		}
	}
}
