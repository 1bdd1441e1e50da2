//go:build !race

package native_test

import (
	"testing"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
)

// An allowed request through the mesh policy allocates nothing once its
// headers are in place.
func TestMeshPolicyAllocs(t *testing.T) {
	f := native.NewMeshPolicy(guard(t), nil)
	x := exchange(ordersID, "")
	f.OnRequestHeaders(x, true)
	if n := testing.AllocsPerRun(1000, func() {
		if f.OnRequestHeaders(x, true) != filter.Continue {
			t.Fatal("denied")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per allowed request", n)
	}
}
