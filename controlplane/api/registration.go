package api

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/registry"
)

// Registration keeps one endpoint registered through the API for as long
// as it runs: it registers, renews the lease every third of its time to
// live (the API renews a live lease rather than granting another), tries
// again with backoff while the control plane cannot be reached, and
// deregisters when it stops, so that callers stop sending before the
// sidecar drains. A sidecar authenticates with its workload certificate
// (Client.HTTP presenting it, Client.Token empty), and needs no
// credentials of etcd.
type Registration struct {
	c   *Client
	ep  registry.Endpoint
	ttl time.Duration
	log *zap.Logger

	registered chan struct{} // closed, once, at the first registration
	once       sync.Once
}

// NewRegistration returns the registration of ep (ep.Cluster is the
// service's registry name) with a lease of ttl (at least 2 s; zero means
// 10 s). logger may be nil.
func NewRegistration(c *Client, ep registry.Endpoint, ttl time.Duration, logger *zap.Logger) (*Registration, error) {
	if err := ep.Check(); err != nil {
		return nil, err
	}
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Registration{c: c, ep: ep, ttl: max(ttl, 2*time.Second), log: logger, registered: make(chan struct{})}, nil
}

// Registered is closed once the endpoint was first registered.
func (r *Registration) Registered() <-chan struct{} { return r.registered }

// Run keeps the endpoint registered until ctx ends, then deregisters it.
// It returns early only when the control plane refuses the registration
// for good (403: the certificate is not of this service; 422: an invalid
// endpoint), with that error.
func (r *Registration) Run(ctx context.Context) error {
	req := EndpointRequest{Address: r.ep.Address, Weight: r.ep.Weight, Version: r.ep.Version, Protocol: r.ep.Protocol, TTL: config.Duration(r.ttl)}
	every := r.ttl / 3
	backoff := 100 * time.Millisecond
	failing := false
	for {
		rctx, cancel := context.WithTimeout(ctx, every)
		_, err := r.c.RegisterEndpoint(rctx, r.ep.Cluster, r.ep.ID, req)
		cancel()
		wait := every
		switch {
		case ctx.Err() != nil:
			return r.deregister(ctx)
		case err == nil:
			if failing {
				r.log.Info("endpoint registered again", zap.String("service", r.ep.Cluster), zap.String("id", r.ep.ID))
			}
			failing, backoff = false, 100*time.Millisecond
			r.once.Do(func() { close(r.registered) })
		case refused(err):
			r.log.Error("the control plane refuses the endpoint", zap.String("service", r.ep.Cluster), zap.String("id", r.ep.ID), zap.Error(err))
			return err
		default:
			// Keep trying within the lease: a renewal that lands before
			// it ends keeps the endpoint without a gap.
			if !failing {
				r.log.Warn("renewing the endpoint's registration failed; trying again", zap.String("service", r.ep.Cluster), zap.Error(err))
			}
			failing = true
			wait = min(backoff, every)
			backoff = min(backoff*2, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return r.deregister(ctx)
		case <-time.After(wait):
		}
	}
}

func (r *Registration) deregister(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := r.c.DeregisterEndpoint(dctx, r.ep.Cluster, r.ep.ID); err != nil {
		var ae *Error
		if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
			r.log.Warn("deregistering the endpoint failed; it expires with its lease", zap.String("service", r.ep.Cluster), zap.Error(err))
		}
	}
	return nil
}

// refused reports an answer that trying again cannot change.
func refused(err error) bool {
	var ae *Error
	return errors.As(err, &ae) && (ae.Status == http.StatusForbidden || ae.Status == http.StatusUnprocessableEntity)
}
