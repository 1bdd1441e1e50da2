package telemetry

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestREDCap(t *testing.T) {
	red := NewRED(3)
	reg := prometheus.NewRegistry()
	reg.MustRegister(red.Collectors()...)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 100 {
				id := fmt.Sprintf("spiffe://mesh/ns/a/sa/s%d", (g+i)%5)
				red.Stats("cart", "payments", id).Observe(200+100*(i%4), time.Millisecond)
			}
		})
	}
	wg.Wait()
	if red.n != 3 {
		t.Errorf("%d label sets, want the cap of 3", red.n)
	}
	over := testutil.ToFloat64(red.overflow)
	if over == 0 {
		t.Error("nothing counted past the cap")
	}
	n, err := testutil.GatherAndCount(reg, "wasmgate_red_requests_total")
	if err != nil {
		t.Fatal(err)
	}
	if n != 4*6 { // three sets and the overflow set, six classes each
		t.Errorf("%d request series, want 24", n)
	}
	var total float64
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "wasmgate_red_requests_total" {
			for _, m := range mf.Metric {
				total += m.GetCounter().GetValue()
			}
		}
	}
	if total != 400 {
		t.Errorf("counted %v requests, want 400", total)
	}
}

// TestREDSetMaxSeries: a cap lowered below the sets counted keeps them
// and sends new ones to the overflow set; raised, it takes new ones again.
func TestREDSetMaxSeries(t *testing.T) {
	red := NewRED(3)
	for _, id := range []string{"a", "b"} {
		if s := red.Stats("r", "d", id); s == red.overStat {
			t.Fatalf("%s overflowed under the cap", id)
		}
	}
	red.SetMaxSeries(1)
	if s := red.Stats("r", "d", "a"); s == red.overStat {
		t.Error("a set counted before the cap was lowered went to the overflow set")
	}
	if s := red.Stats("r", "d", "c"); s != red.overStat {
		t.Error("a new set past the lowered cap was counted")
	}
	red.SetMaxSeries(3)
	if s := red.Stats("r", "d", "c"); s == red.overStat {
		t.Error("a new set under the raised cap went to the overflow set")
	}
}
