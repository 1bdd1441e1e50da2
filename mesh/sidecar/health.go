package sidecar

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/wasmgate/wasmgate/config"
)

// HealthCheck is how a sidecar probes its app, as an App Mesh virtual
// node's health check, a Consul service check or a Kubernetes readiness
// probe: the sidecar registers its inbound address once the app is
// healthy, deregisters it while the app is not, so that callers stop
// sending to an app that cannot answer, and registers it again when the
// app recovers.
type HealthCheck struct {
	// HTTP is the path of a GET to the app on 127.0.0.1:AppPort over
	// HTTP/1.1 ("/healthz"); an answer of 2xx or 3xx is healthy. For an
	// app of protocol http only.
	HTTP string `yaml:"http,omitempty" json:"http,omitempty"`
	// TCP, when true, probes by connecting: a connection the app accepts
	// is healthy.
	TCP bool `yaml:"tcp,omitempty" json:"tcp,omitempty"`
	// GRPC, when true, asks the app's gRPC health service
	// (grpc.health.v1.Health/Check, over h2c) about GRPCService ("" for
	// the server as a whole); SERVING is healthy. For an app of protocol
	// grpc or http2.
	GRPC        bool   `yaml:"grpc,omitempty" json:"grpc,omitempty"`
	GRPCService string `yaml:"grpc_service,omitempty" json:"grpc_service,omitempty"`
	// Interval is the time between probes (5s by default), Timeout the
	// longest a probe may take (1s, at most Interval).
	Interval config.Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
	Timeout  config.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// UnhealthyThreshold is how many failed probes in a row make a
	// healthy app unhealthy (3); HealthyThreshold how many passed probes
	// in a row make an unhealthy or starting app healthy (1).
	UnhealthyThreshold int `yaml:"unhealthy_threshold,omitempty" json:"unhealthy_threshold,omitempty"`
	HealthyThreshold   int `yaml:"healthy_threshold,omitempty" json:"healthy_threshold,omitempty"`
}

// ParseHealthCheck reads the flag form of a health check: "tcp", "grpc"
// or "grpc:SERVICE", or the path of an HTTP check ("/healthz").
func ParseHealthCheck(v string) (*HealthCheck, error) {
	switch {
	case v == "tcp":
		return &HealthCheck{TCP: true}, nil
	case v == "grpc":
		return &HealthCheck{GRPC: true}, nil
	case strings.HasPrefix(v, "grpc:"):
		return &HealthCheck{GRPC: true, GRPCService: strings.TrimPrefix(v, "grpc:")}, nil
	case strings.HasPrefix(v, "/"):
		return &HealthCheck{HTTP: v}, nil
	}
	return nil, fmt.Errorf("%q is none of tcp, grpc, grpc:SERVICE or the path of an HTTP check (/healthz)", v)
}

func (h *HealthCheck) normalize() {
	h.Interval = config.Duration(cmp.Or(time.Duration(h.Interval), 5*time.Second))
	h.Timeout = config.Duration(cmp.Or(time.Duration(h.Timeout), min(time.Second, time.Duration(h.Interval))))
	h.UnhealthyThreshold = cmp.Or(h.UnhealthyThreshold, 3)
	h.HealthyThreshold = cmp.Or(h.HealthyThreshold, 1)
}

// validate adds the health check's problems to add, under health_check.
func (h *HealthCheck) validate(protocol string, add func(field, format string, args ...any)) {
	kinds := 0
	for _, on := range []bool{h.HTTP != "", h.TCP, h.GRPC} {
		if on {
			kinds++
		}
	}
	switch {
	case kinds != 1:
		add("health_check", "needs one of http (a path), tcp: true or grpc: true")
	case h.HTTP != "" && !strings.HasPrefix(h.HTTP, "/"):
		add("health_check.http", "%q is not a path", h.HTTP)
	case h.HTTP != "" && protocol != ProtocolHTTP:
		add("health_check.http", "an app of protocol %s is probed with tcp: true (or grpc: true, for a gRPC server)", protocol)
	case h.GRPC && protocol != ProtocolGRPC && protocol != ProtocolHTTP2:
		add("health_check.grpc", "an app of protocol %s serves no gRPC", protocol)
	}
	if h.GRPCService != "" && !h.GRPC {
		add("health_check.grpc_service", "is for grpc: true only")
	}
	if d := time.Duration(h.Interval); d < 100*time.Millisecond || d > 5*time.Minute {
		add("health_check.interval", "must be 100ms to 5m, not %v", d)
	}
	if d := time.Duration(h.Timeout); d <= 0 || d > time.Duration(h.Interval) {
		add("health_check.timeout", "must be more than 0 and at most the interval (%v), not %v", time.Duration(h.Interval), d)
	}
	for _, t := range []struct {
		field string
		n     int
	}{{"unhealthy_threshold", h.UnhealthyThreshold}, {"healthy_threshold", h.HealthyThreshold}} {
		if t.n < 1 || t.n > 100 {
			add("health_check."+t.field, "must be 1 to 100, not %d", t.n)
		}
	}
}

// WatchHealth probes the app of s every interval until ctx ends and
// sends on the channel it returns each change of the app's health: true
// once the app passed HealthyThreshold probes in a row (the first value,
// however long the app takes to start), false once a healthy app failed
// UnhealthyThreshold in a row. The channel is closed when ctx ends. s
// must be normalised and valid, with a health check. onChange, when not
// nil, is called with each change as it is sent (a metric's setter).
func WatchHealth(ctx context.Context, s *Settings, log *zap.Logger, onChange func(healthy bool)) <-chan bool {
	if log == nil {
		log = zap.NewNop()
	}
	h := *s.HealthCheck
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.AppPort))
	timeout := time.Duration(h.Timeout)
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// A redirect is an answer: the app is up.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var conn *grpc.ClientConn
	if h.GRPC {
		// One connection for every probe, which reconnects by itself
		// when the app restarts; NewClient does not dial.
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			log.Error("the gRPC health check cannot be made", zap.Error(err))
		}
		conn = c
	}
	probe := func() error {
		if h.GRPC {
			if conn == nil {
				return errors.New("no gRPC client")
			}
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(pctx, &healthpb.HealthCheckRequest{Service: h.GRPCService})
			if err != nil {
				return err
			}
			if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("status %s", st)
			}
			return nil
		}
		if h.TCP {
			c, err := net.DialTimeout("tcp", addr, timeout)
			if err == nil {
				c.Close()
			}
			return err
		}
		resp, err := client.Get("http://" + addr + h.HTTP)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	out := make(chan bool, 1)
	changed := func(v bool) {
		if onChange != nil {
			onChange(v)
		}
		send(ctx, out, v)
	}
	go func() {
		defer close(out)
		if conn != nil {
			defer conn.Close()
		}
		t := time.NewTicker(time.Duration(h.Interval))
		defer t.Stop()
		healthy, known := false, false
		passed, failed := 0, 0
		for {
			if err := probe(); err != nil {
				passed, failed = 0, failed+1
				if healthy && failed >= h.UnhealthyThreshold {
					healthy = false
					log.Warn("the app is unhealthy; its address is deregistered until it is healthy again", zap.Error(err), zap.Int("failed_probes", failed))
					changed(false)
				} else if !known && failed == 1 {
					log.Info("waiting for the app to be healthy before registering it", zap.Error(err))
				}
			} else {
				passed, failed = passed+1, 0
				if !healthy && passed >= h.HealthyThreshold {
					if known {
						log.Info("the app is healthy again; registering its address")
					}
					healthy, known = true, true
					changed(true)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// send delivers v unless ctx ends first.
func send(ctx context.Context, out chan<- bool, v bool) {
	select {
	case out <- v:
	case <-ctx.Done():
	}
}

// Registrar keeps an endpoint registered until its context ends, then
// deregisters it (api.Registration, discovery.Registration).
type Registrar interface {
	Run(ctx context.Context) error
}

// RegisterWhileHealthy keeps the sidecar's address registered while its
// app is healthy, until ctx ends: a registration from newReg runs from
// each true of health to the next false, which deregisters it. With a
// nil health the address is registered at once, for as long as ctx
// lasts. It returns the error of a registration that ended on its own
// (refused for good by the control plane), or nil once ctx ended and the
// address is deregistered.
func RegisterWhileHealthy(ctx context.Context, health <-chan bool, newReg func() (Registrar, error)) error {
	var stop context.CancelFunc
	var done chan error
	start := func() error {
		reg, err := newReg()
		if err != nil {
			return err
		}
		rctx, cancel := context.WithCancel(ctx)
		stop, done = cancel, make(chan error, 1)
		go func() { done <- reg.Run(rctx) }()
		return nil
	}
	if health == nil {
		if err := start(); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			if done != nil {
				<-done
				stop()
			}
			return nil
		case ok, open := <-health:
			switch {
			case !open:
				health = nil
			case ok && done == nil:
				if err := start(); err != nil {
					return err
				}
			case !ok && done != nil:
				stop()
				<-done
				stop, done = nil, nil
			}
		case err := <-done:
			stop()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}
