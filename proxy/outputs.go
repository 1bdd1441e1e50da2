package proxy

import (
	"context"
	"os"
	"reflect"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/telemetry/push"
	"github.com/wasmgate/wasmgate/proxy/telemetry/tracing"
)

// outputs are what the telemetry section starts beside the record sinks
// (which the pipeline reconfigures itself): the exporter of the proxy's
// own spans and the push of its metrics. Apply rebuilds each only when
// its settings change; one that is replaced flushes what it holds and
// stops once the last request of the snapshot it served is done (the
// tracer) or at once (the push).
type outputs struct {
	tracer  *tracing.Tracer
	tracing *config.Tracing
	push    *push.Pusher
	metrics *config.MetricsPush
}

// outputsChange is a prepared change of the outputs: what Apply puts in
// force with its snapshot, or throws away when it fails.
type outputsChange struct {
	next      outputs
	tracerNew bool // next.tracer was built for this change
	pushNew   bool
	oldTracer *tracing.Tracer // replaced, to stop after the old snapshot
	oldPush   *push.Pusher
	maxSeries int
}

// prepareOutputs builds the outputs that c asks for and that differ from
// the running ones. An output that cannot be built is an error naming
// its field path, and nothing changes. With a fixed tracer
// (Options.Tracer), the configuration's tracing is not used.
func (s *Server) prepareOutputs(c *config.Telemetry) (*outputsChange, error) {
	var tc *config.Tracing
	var mc *config.MetricsPush
	ch := &outputsChange{next: s.out}
	if c != nil {
		tc, mc, ch.maxSeries = c.Tracing, c.Metrics, c.MaxSeries
	}
	if s.fixedTracer == nil && !reflect.DeepEqual(tc, s.out.tracing) {
		ch.next.tracer, ch.next.tracing, ch.tracerNew, ch.oldTracer = nil, tc, true, s.out.tracer
		if tc != nil {
			t, err := tracing.New(tc, s.hostname)
			if err != nil {
				return nil, err
			}
			ch.next.tracer = t
		}
	}
	if !reflect.DeepEqual(mc, s.out.metrics) {
		ch.next.push, ch.next.metrics, ch.pushNew, ch.oldPush = nil, mc, true, s.out.push
		if mc != nil {
			p, err := push.Start(mc, s.metrics.Registry, s.hostname)
			if err != nil {
				ch.discard()
				return nil, err
			}
			ch.next.push = p
		}
	}
	return ch, nil
}

// discard stops what the change built.
func (ch *outputsChange) discard() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if ch.tracerNew {
		_ = ch.next.tracer.Shutdown(ctx)
	}
	if ch.pushNew && ch.next.push != nil {
		_ = ch.next.push.Shutdown(ctx)
	}
}

// commit puts the change in force: the caller holds s.mu, and the new
// snapshot takes s.tracerNow. The replaced push stops now, in the
// background; the replaced tracer goes to the old snapshot's retire.
func (s *Server) commitOutputs(ch *outputsChange) {
	s.out = ch.next
	if s.red != nil {
		s.red.SetMaxSeries(ch.maxSeries)
	}
	if ch.oldPush != nil {
		old := ch.oldPush
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := old.Shutdown(ctx); err != nil {
				s.log.Warn("the replaced metric push did not push its last metrics", zap.Error(err))
			}
		}()
	}
}

// tracerNow is the tracer of requests from now on.
func (s *Server) tracerNow() *tracing.Tracer {
	if s.fixedTracer != nil {
		return s.fixedTracer
	}
	return s.out.tracer
}

// stopTracer exports the spans t still holds, within 5 seconds, and
// stops it.
func (s *Server) stopTracer(t *tracing.Tracer) {
	if t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		s.log.Warn("the replaced tracer did not export its last spans", zap.Error(err))
	}
}

// stopOutputs flushes and stops the running outputs at shutdown, until
// ctx ends.
func (s *Server) stopOutputs(ctx context.Context) {
	s.mu.Lock()
	out := s.out
	s.out = outputs{}
	s.mu.Unlock()
	if out.push != nil {
		if err := out.push.Shutdown(ctx); err != nil {
			s.log.Warn("pushing the last metrics", zap.Error(err))
		}
	}
	if err := out.tracer.Shutdown(ctx); err != nil {
		s.log.Warn("exporting the last spans", zap.Error(err))
	}
}

func hostnameOr(h string) string {
	if h != "" {
		return h
	}
	h, _ = os.Hostname()
	return h
}
