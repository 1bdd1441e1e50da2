package route

import (
	"math/rand/v2"
	"time"

	"github.com/wasmgate/wasmgate/config"
)

// Fault is a route's fault injection, compiled: the share of requests
// delayed, by how long, and the share answered with Status instead of
// being forwarded, each in parts per million.
type Fault struct {
	Delay    time.Duration
	delayPPM uint32
	Status   int
	abortPPM uint32
}

func compileFault(f *config.Fault) *Fault {
	if f == nil {
		return nil
	}
	out := &Fault{}
	if d := f.Delay; d != nil {
		out.Delay, out.delayPPM = d.Fixed.D(), ppm(d.Percent)
	}
	if a := f.Abort; a != nil {
		out.Status, out.abortPPM = a.Status, ppm(a.Percent)
	}
	return out
}

func ppm(percent float64) uint32 { return uint32(percent*10000 + 0.5) }

// Roll draws, for one request, whether it is delayed and whether it is
// aborted.
func (f *Fault) Roll() (delay, abort bool) {
	return f.delayPPM > 0 && rand.Uint32N(1_000_000) < f.delayPPM, f.abortPPM > 0 && rand.Uint32N(1_000_000) < f.abortPPM
}
