package telemetry

import (
	"testing"
	"time"
)

func TestTimeCache(t *testing.T) {
	var c timeCache
	base := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("x", 3600))
	for _, d := range []time.Duration{0, 891 * time.Millisecond, 1, 100 * time.Microsecond, time.Second + 5, 2*time.Hour + 10*time.Nanosecond} {
		tm := base.Add(d)
		got := string(c.append(nil, tm))
		if want := tm.UTC().Format(time.RFC3339Nano); got != want {
			t.Errorf("%v: %s, want %s", tm, got, want)
		}
	}
}
