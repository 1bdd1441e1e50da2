package loadgen

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1µs to one hour, with three
// significant digits: the resolution of wrk2 and of HdrHistogram's plots.
const (
	histLowest  = 1
	histHighest = int64(time.Hour / time.Microsecond)
	histSigFigs = 3
)

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histSigFigs)
}

// second is one slot of the throughput timeline.
type second struct {
	Responses int64
	Errors    int64
	Status5xx int64 // responses with a 5xx status, counted in Responses too
}

// stats is what one worker records. The worker owns it; nothing else reads
// it before the worker has finished, except through the atomic counters
// and, when live progress is on, the histogram under mu. No field is
// shared between workers, so the hot path takes no shared lock.
type stats struct {
	// Counters read while the run goes on, by the monitor.
	responses atomic.Int64 // measured responses
	errors    atomic.Int64 // measured errors
	status5xx atomic.Int64 // measured responses with a 5xx status
	anyOK     atomic.Int64 // responses, warm-up included: a sign of life
	anyErr    atomic.Int64 // errors, warm-up included
	_         [64]byte     // keep the next worker's counters off this cache line

	mu       sync.Mutex // guards hist while live progress is on
	locked   bool       // take mu when recording
	hist     *hdrhistogram.Histogram
	status   [600]int64
	badCode  int64 // status codes outside 100..599
	kinds    [numErrorKinds]int64
	bytesIn  atomic.Int64 // written by connection readers, some on goroutines of their own
	bytesOut atomic.Int64
	timeline []second
	lastErr  atomic.Pointer[error] // the latest error, warm-up included
}

func newStats(expectSeconds int, lockHist bool) *stats {
	return &stats{
		hist:     newHistogram(),
		locked:   lockHist,
		timeline: make([]second, 0, expectSeconds+4),
	}
}

// recordResponse counts one measured response with the given latency that
// completed at offset (from the start of measurement).
func (s *stats) recordResponse(latency, offset time.Duration, status int) {
	us := int64(latency / time.Microsecond)
	if us < histLowest {
		us = histLowest
	} else if us > histHighest {
		us = histHighest
	}
	if s.locked {
		s.mu.Lock()
		_ = s.hist.RecordValue(us)
		s.mu.Unlock()
	} else {
		_ = s.hist.RecordValue(us)
	}
	if status >= 0 && status < len(s.status) {
		s.status[status]++
	} else {
		s.badCode++
	}
	slot := s.slot(offset)
	slot.Responses++
	s.responses.Add(1)
	if status >= 500 && status < 600 {
		slot.Status5xx++
		s.status5xx.Add(1)
	}
}

// recordError counts one measured failed request.
func (s *stats) recordError(err error, offset time.Duration) {
	s.kinds[classify(err)]++
	s.slot(offset).Errors++
	s.errors.Add(1)
}

func (s *stats) slot(offset time.Duration) *second {
	i := int(offset / time.Second)
	if i < 0 {
		i = 0
	}
	for len(s.timeline) <= i {
		s.timeline = append(s.timeline, second{})
	}
	return &s.timeline[i]
}
