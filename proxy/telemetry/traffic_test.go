package telemetry

import (
	"math"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/proxy/metrics"
)

func TestTrafficSampler(t *testing.T) {
	m := metrics.New()
	stats := m.Route("public", "cart", "c")
	s := NewTrafficSampler(m.Registry)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	s.Sample()
	// 20 s later: 90 requests, 9 of them 5xx.
	for i := range 90 {
		status := 200
		if i%10 == 0 {
			status = 503
		}
		stats.Observe(status, time.Millisecond)
	}
	now = now.Add(20 * time.Second)
	got := s.Sample()
	if math.Abs(got.RequestRate-4.5) > 1e-9 || math.Abs(got.Ratio5xx-0.1) > 1e-9 {
		t.Errorf("traffic %+v, want 4.5/s and 10%%", got)
	}
	// Two quiet minutes later the window holds no request.
	for range 8 {
		now = now.Add(15 * time.Second)
		got = s.Sample()
	}
	if got.RequestRate != 0 || got.Ratio5xx != 0 {
		t.Errorf("after a quiet minute: %+v", got)
	}
}
